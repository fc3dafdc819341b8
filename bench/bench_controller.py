"""What a step costs, how late steps are, and what the API sees, with many Canaries progressing at once.

The sandbox (API server, Deployment and Gateway simulators; with --lean no
traffic simulation) runs as its own process (`canaryd sandbox`), and so does a
stub Prometheus that answers every query at once (bench/stub_prometheus.py):
this measures the controller and the Kubernetes API, not Prometheus (see
bench/bench_prometheus.py for that side), but the controller still sends each
metric's query over HTTP as in production. Each Canary renders its own query
(its namespace and target are in it), so no two share an answer. The
controller runs in this process so its request counts and step lateness can be
read exactly. Every Canary gets a new revision at the same moment and walks
the same five steps (with --spread, the new revisions are released evenly over
one interval instead, so steps fall due at a steady rate rather than all at
once: all at once, lateness is the time one burst of steps takes to drain).

Then, in the same run and against the same sandbox and stub, the floor: a bare
aiohttp loop that makes the same writes per step (the guarded route JSON
patch, the status merge patch, the Event) and the same queries, with no
caches, no decisions, no scheduling. Its CPU per step is what the I/O alone
costs this process; the controller's is compared with it.

Printed:
- Kubernetes API requests per step, by verb and resource, for the whole run and
  for the steady-state window (every Canary past its first step, none yet
  at its last). Goal: route patch, status patch and Event per step, no reads;
- step lateness (actual minus due) p50/p99/max;
- controller CPU per step in the steady-state window (this process, whose
  bench polling is included), the floor's CPU per step and the ratio;
- the controller's RSS (this process) during the run and its peak;
- CPU used by the sandbox, the stub Prometheus and this (controller) process
  in each phase, as a share of wall time (1.00 = one core busy; each process
  runs one event loop, so a process near 1.00 limits throughput), and this
  process's event-loop lag (p99 of how late a 100 ms timer fires): who is the
  bottleneck. Read from /proc (Linux);
- with --baseline N, the same for N Canaries first, and the lateness ratio.

    python bench/bench_controller.py --lean                       # 1,000 Canaries, 30 s interval
    python bench/bench_controller.py --lean --spread --interval 60  # revisions spread over one interval
    python bench/bench_controller.py --lean --canaries 10000 --interval 60 --namespaces 100 --qps 2000
    python bench/bench_controller.py --canaries 200 --baseline 10  # with traffic simulation
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from canaryd import data  # noqa: E402
from canaryd.adapters.kube import (  # noqa: E402
    CANARIES,
    DEPLOYMENTS,
    EVENTS,
    HTTP_ROUTES,
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    KubeClient,
)
from canaryd.api.models import Canary  # noqa: E402
from canaryd.runtime.controller import running_controller  # noqa: E402
from canaryd.runtime.log_setup import configure_logging  # noqa: E402
from canaryd.runtime.metric_checks import threshold_queries  # noqa: E402
from canaryd.runtime.settings import Settings  # noqa: E402
from canaryd.sandbox.apply import CUSTOM_RESOURCE_DEFINITIONS, ensure_namespace  # noqa: E402
from canaryd.sandbox.sim.cluster_view import GATEWAY_CLASSES, GATEWAYS  # noqa: E402
from tests.runtime.world import canary, deployment, route  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STEPS = [10, 20, 30, 40, 50]
#: Rendered per Canary (its namespace and target), so no two Canaries share an answer.
QUERY = (
    'sum(rate(app_requests_total{namespace="{{ namespace }}",deployment="{{ target }}-canary",'
    'code!~"5.."}[1m])) / sum(rate(app_requests_total{namespace="{{ namespace }}",'
    'deployment="{{ target }}-canary"}[1m])) * 100'
)
PASSING = {"name": "success-rate", "query": QUERY, "thresholdRange": {"min": 99}}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(field: str, pid: str = "self") -> int:
    """A VmRSS/VmHWM-style line of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class CpuMarks:
    """Wall clock and CPU of the sandbox, the stub Prometheus and this process at named moments."""

    def __init__(self, sandbox_pid: int, stub_pid: int) -> None:
        self.pids = {"sandbox": sandbox_pid, "stub": stub_pid, "controller": os.getpid()}
        self.marks: list[tuple[str, float, dict[str, float]]] = []

    def mark(self, name: str) -> None:
        self.marks.append((name, time.monotonic(), {k: cpu_seconds(pid) for k, pid in self.pids.items()}))

    def phases(self) -> list[tuple[str, float, dict[str, float]]]:
        """(phase, wall seconds, CPU seconds by process) between consecutive marks."""
        return [
            (name, wall - wall0, {k: cpu[k] - cpu0[k] for k in cpu})
            for (_, wall0, cpu0), (name, wall, cpu) in zip(self.marks, self.marks[1:], strict=False)
        ]


class LoopLag:
    """How late a 100 ms timer fires on this process's event loop (the controller's loop)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.1)
            self.samples.append(max(0.0, loop.time() - before - 0.1))

    def start(self) -> None:
        self.samples.clear()
        self._task = asyncio.create_task(self._run())

    def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
        return sorted(self.samples)


class LatenessRecorder:
    def __init__(self) -> None:
        self.samples: list[float] = []

    def observe(self, value: float) -> None:
        self.samples.append(value)


def namespace_of(index: int, namespaces: int) -> str:
    """Canary `index` lives in bench-0 .. bench-(namespaces-1), round robin."""
    return f"bench-{index % namespaces}"


def objects(
    index: int, interval: int, namespace: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Canary ``index``'s Deployment, HTTPRoute and Canary, built as the runtime tests build them."""
    name = f"app-{index:05d}"
    return (
        deployment(namespace, name, image="app:1", replicas=1),
        route(namespace, name, rps=1, parent_namespace=namespace),
        canary(namespace, name, step_weights=STEPS, interval=f"{interval}s", threshold=2, metrics=[PASSING]),
    )


def wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def sandbox_process(workdir: Path, lean: bool) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    kubeconfig = workdir / "kubeconfig"
    log_path = workdir / "sandbox.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryd.cli.main", "sandbox", "--port", "0",
         "--kubeconfig-out", str(kubeconfig), "--ready-delay", "0.2", *(["--no-traffic"] if lean else [])],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    try:
        wait_for_file(kubeconfig, process, log_path, "the sandbox")
        yield kubeconfig, process
    finally:
        stop_process(process)
        log.close()


@contextlib.contextmanager
def stub_prometheus(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port_file = workdir / "stub-prometheus.port"
    log_path = workdir / "stub-prometheus.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "stub_prometheus.py"), "--port-file", str(port_file)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    try:
        wait_for_file(port_file, process, log_path, "the stub Prometheus")
        yield f"http://127.0.0.1:{port_file.read_text().strip()}", process
    finally:
        stop_process(process)
        log.close()


async def gather_limited(coroutines: list[Any], limit: int = 64) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            await coroutine

    await asyncio.gather(*(run(c) for c in coroutines))


async def arrange(client: KubeClient, count: int, interval: int, namespaces: int) -> None:
    for crd in data.documents("crd"):
        with contextlib.suppress(ApiError):  # installed by an earlier size of this run
            await client.create(CUSTOM_RESOURCE_DEFINITIONS, "", crd)
    classes = (await client.list(GATEWAY_CLASSES))["items"]
    class_name = classes[0]["metadata"]["name"] if classes else "sandbox"
    for namespace in sorted({namespace_of(i, namespaces) for i in range(namespaces)}):
        await ensure_namespace(client, namespace)
        await client.create(
            GATEWAYS,
            namespace,
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "public", "namespace": namespace},
                "spec": {
                    "gatewayClassName": class_name,
                    "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
                },
            },
        )
    made = [objects(i, interval, namespace_of(i, namespaces)) for i in range(count)]
    for kind, position in ((DEPLOYMENTS, 0), (HTTP_ROUTES, 1), (CANARIES, 2)):
        await gather_limited(
            [client.create(kind, trio[position]["metadata"]["namespace"], trio[position]) for trio in made]
        )


async def release_revisions(
    client: KubeClient, count: int, namespaces: int, spread_over: float | None
) -> None:
    """Roll image app:2 out to Canaries 0 .. count-1: all at once, or evenly over `spread_over` seconds.

    Spread, the i-th new revision lands i/count of that time after the first, so
    steps fall due at a steady rate rather than in one burst.
    """
    started = time.monotonic()
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/image", "value": "app:2"}]

    async def release(i: int) -> None:
        if spread_over is not None:
            await asyncio.sleep(started + i * spread_over / count - time.monotonic())
        await client.patch(
            DEPLOYMENTS,
            namespace_of(i, namespaces),
            f"app-{i:05d}",
            patch,
            content_type="application/json-patch+json",
        )

    await gather_limited([release(i) for i in range(count)], limit=count if spread_over is not None else 64)


async def floor_loop(
    client: KubeClient, prometheus_url: str, count: int, namespaces: int, steps: int
) -> dict[str, Any]:
    """The same writes and queries as the controller's steps, from a bare aiohttp loop: no decisions.

    Per step and Canary: the Canary's own query to the stub Prometheus, a status
    merge patch, the Event, the route JSON patch guarded by ``test`` ops on its
    backendRef names (not on its resourceVersion, which the Gateway simulator's
    status writes move and only a watch would follow). The rendered queries are
    read before the clock starts.
    """
    configuration = client.configuration
    base = str(configuration.host).rstrip("/")
    token = await configuration.get_api_key_with_prefix("BearerToken")
    auth = {"Authorization": str(token)} if token else {}
    names = [(namespace_of(i, namespaces), f"app-{i:05d}") for i in range(count)]
    queries: dict[tuple[str, str], list[str]] = {}
    for namespace in sorted({ns for ns, _ in names}):
        for item in (await client.list(CANARIES, namespace))["items"]:
            parsed = Canary.model_validate(item)
            queries[(parsed.metadata.namespace, parsed.metadata.name)] = [
                promql for check in parsed.spec.analysis.metrics
                for _, promql in threshold_queries(parsed, check, None)
            ]  # fmt: skip
    connector = aiohttp.TCPConnector(limit=256)
    session = aiohttp.ClientSession(connector=connector)
    json_headers = {**auth, "Accept": "application/json", "Content-Type": "application/json"}
    requests = Counter[str]()

    async def send(method: str, url: str, body: Any, content_type: str) -> Any:
        headers = {**json_headers, "Content-Type": content_type}
        async with session.request(method, url, data=json.dumps(body).encode(), headers=headers) as response:
            answer = await response.json(content_type=None)
            if response.status >= 300:
                raise RuntimeError(f"{method} {url}: {response.status} {answer}")
            requests[method] += 1
            return answer

    async def step(namespace: str, name: str, number: int) -> None:
        canary_weight = STEPS[number % len(STEPS)]
        now = datetime.now(UTC)
        for promql in queries[(namespace, name)]:
            params = {"query": promql, "time": f"{now.timestamp():.3f}"}
            async with session.get(f"{prometheus_url}/api/v1/query", params=params) as response:
                await response.json()
                requests["query"] += 1
        await send(
            "PATCH", f"{base}{CANARIES.path(namespace, name, 'status')}",
            {"status": {"canaryWeight": canary_weight}}, MERGE_PATCH,
        )  # fmt: skip
        await send(
            "POST", f"{base}{EVENTS.path(namespace)}",
            {
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": f"{name}.floor{number}", "namespace": namespace},
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "reportingController": "canaryd.io/bench-floor", "reportingInstance": "floor",
                "action": "Progressing", "reason": "Progressing", "type": "Normal",
                "note": f"Advanced canary weight to {canary_weight}",
                "regarding": {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary",
                              "namespace": namespace, "name": name},
            },
            "application/json",
        )  # fmt: skip
        refs = "/spec/rules/0/backendRefs"
        ops = [
            {"op": "test", "path": f"{refs}/0/name", "value": f"{name}-primary"},
            {"op": "replace", "path": f"{refs}/0/weight", "value": 100 - canary_weight},
            {"op": "test", "path": f"{refs}/1/name", "value": f"{name}-canary"},
            {"op": "replace", "path": f"{refs}/1/weight", "value": canary_weight},
        ]
        await send("PATCH", f"{base}{HTTP_ROUTES.path(namespace, name)}", ops, JSON_PATCH)

    cpu_before, wall_before = cpu_seconds(os.getpid()), time.monotonic()
    try:
        for number in range(steps):
            await gather_limited([step(namespace, name, number) for namespace, name in names], limit=256)
    finally:
        await session.close()
    return {
        "steps": count * steps,
        "cpu": cpu_seconds(os.getpid()) - cpu_before,
        "wall": time.monotonic() - wall_before,
        "requests": dict(requests),
    }


def phases(controller: Any) -> Counter[str]:
    return Counter((c.get("status") or {}).get("phase", "-") for c in controller.caches.canaries.items())


def steps_taken(controller: Any) -> int:
    return sum(int((c.get("status") or {}).get("step", 0)) for c in controller.caches.canaries.items())


def reconcile_passes(controller: Any) -> int:
    """Reconcile passes the controller has made (any outcome): a step's wake-up, and every event's look."""
    total = 0
    for metric in controller.metrics.registry.collect():
        if metric.name == "canaryd_reconciles":
            total += sum(int(s.value) for s in metric.samples if s.name.endswith("_total"))
    return total


def request_counts(controller: Any) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for metric in controller.metrics.registry.collect():
        if metric.name != "canaryd_kubernetes_requests":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[(sample.labels["verb"], sample.labels["resource"])] += int(sample.value)
    return counts


def per_step(delta: Counter[tuple[str, str]], steps: int) -> str:
    if steps == 0:
        return "(no steps)"
    by_verb: Counter[str] = Counter()
    for (verb, _), n in delta.items():
        by_verb[verb] += n
    lines = [f"    {verb:7s} {n / steps:6.2f}" for verb, n in sorted(by_verb.items()) if verb != "watch"]
    detail = [
        f"      {verb} {resource}: {n / steps:.2f}"
        for (verb, resource), n in sorted(delta.items())
        if verb != "watch"
    ]
    return "\n".join(lines + detail)


async def measure(count: int, workdir: Path, options: argparse.Namespace) -> dict[str, Any]:
    with (
        sandbox_process(workdir, options.lean) as (kubeconfig, process),
        stub_prometheus(workdir) as (
            prometheus_url,
            stub,
        ),
    ):
        cpu = CpuMarks(process.pid, stub.pid)
        lag = LoopLag()
        cpu.mark("start")
        arranger = await KubeClient.connect(str(kubeconfig), qps=5000, burst=5000)
        try:
            await arrange(arranger, count, options.interval, options.namespaces)
            cpu.mark("setup (create objects)")
            settings = Settings(
                kubeconfig=str(kubeconfig),
                health_address="0",
                metrics_address="0",
                # one namespace: watch it alone; several: watch cluster-wide (one watch per kind)
                namespaces=[namespace_of(0, 1)] if options.namespaces == 1 else [],
                qps=options.qps,
                burst=options.burst,
                prometheus_url=prometheus_url,
            )
            shutdown = contextlib.AsyncExitStack()
            controller = await shutdown.enter_async_context(running_controller(settings))
            try:
                lateness = LatenessRecorder()
                controller.metrics.step_lateness = lateness  # type: ignore[assignment]
                started = time.monotonic()
                while phases(controller).get("Initialized", 0) < count:
                    await asyncio.sleep(0.5)
                    if time.monotonic() - started > options.init_timeout:
                        raise RuntimeError(f"initialization stalled: {phases(controller)}")
                init_seconds = time.monotonic() - started
                cpu.mark("initialization")
                before_run = request_counts(controller)
                run_started = time.monotonic()
                lag.start()
                await release_revisions(
                    arranger, count, options.namespaces, options.interval if options.spread else None
                )
                window_start: tuple[Counter[tuple[str, str]], int, int] | None = None
                window_end: tuple[Counter[tuple[str, str]], int, int] | None = None
                rss_in_run = 0
                stalled: dict[str, int] | None = None
                while phases(controller).get("Succeeded", 0) < count:
                    await asyncio.sleep(0.5)
                    steps = [
                        int((c.get("status") or {}).get("step", 0))
                        for c in controller.caches.canaries.items()
                    ]
                    if window_start is None and min(steps) >= 1:
                        window_start = (
                            request_counts(controller), steps_taken(controller), reconcile_passes(controller)
                        )
                        cpu.mark("run: first step to steady state")
                    if window_start is not None and window_end is None and max(steps) >= len(STEPS):
                        window_end = (
                            request_counts(controller), steps_taken(controller), reconcile_passes(controller)
                        )
                        rss_in_run = memory_kib("VmRSS")
                        cpu.mark("run: steady state")
                    if time.monotonic() - run_started > options.run_timeout:
                        stalled = dict(phases(controller))  # report what was measured, marked unfinished
                        break
                run_seconds = time.monotonic() - run_started
                cpu.mark("run: last steps and promotion")
                loop_lag = lag.stop()
                after_run = request_counts(controller)
                steps_taken_at_end = steps_taken(controller)
                queries = controller_queries(controller)
            finally:
                shutdown_hung = await stop_within(shutdown, options.shutdown_timeout)
            floor = None
            if options.floor and stalled is None:
                floor = await floor_loop(arranger, prometheus_url, count, options.namespaces, len(STEPS))
        finally:
            await arranger.close()
    total_steps = count * len(STEPS) if stalled is None else steps_taken_at_end
    result: dict[str, Any] = {
        "count": count,
        "interval": options.interval,
        "qps": options.qps,
        "lean": options.lean,
        "spread": options.spread,
        "namespaces": min(options.namespaces, count),
        "init_seconds": init_seconds,
        "run_seconds": run_seconds,
        "run_delta": after_run - before_run,
        "total_steps": total_steps,
        "lateness": sorted(lateness.samples),
        "loop_lag": loop_lag,
        "stalled": stalled,
        "shutdown_hung": shutdown_hung,
        "cpu_phases": cpu.phases(),
        "rss_in_run_kib": rss_in_run,
        "rss_peak_kib": memory_kib("VmHWM"),
        "queries": queries,
        "floor": floor,
        # the controller's requests plus the bench's one Deployment patch per Canary
        "run_requests": count
        + sum(n for (verb, _), n in (after_run - before_run).items() if verb != "watch"),
    }
    if window_start is not None and window_end is not None:
        result["window_delta"] = window_end[0] - window_start[0]
        result["window_steps"] = window_end[1] - window_start[1]
        result["window_passes"] = window_end[2] - window_start[2]
    return result


def controller_queries(controller: Any) -> tuple[int, int]:
    """(queries sent to Prometheus, queries answered by sharing one) by the controller so far."""
    for closer in controller._closers:
        querier = getattr(closer, "querier", None)
        if querier is not None:
            return querier.sent, querier.shared
    return 0, 0


async def stop_within(stack: contextlib.AsyncExitStack, seconds: float) -> str | None:
    """Stop the controller; if that takes longer than `seconds`, leave it and return the tasks' stacks."""
    stopping = asyncio.create_task(stack.aclose())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    if done:
        stopping.result()
        return None
    stacks = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(limit=8, file=stacks)
    return stacks.getvalue()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


def report_cpu(result: dict[str, Any]) -> None:
    cores = os.cpu_count() or 1
    print(
        "  CPU by phase (share of wall: 1.00 = one core busy; the controller process also runs the "
        "bench's polling every 0.5 s):"
    )
    print(
        f"    {'phase':34s} {'wall s':>7s} {'sandbox s':>10s} {'stub s':>7s} {'ctrl s':>7s} "
        f"{'sandbox/wall':>12s} {'stub/wall':>9s} {'ctrl/wall':>9s} {'host busy':>9s}"
    )
    for name, wall, used in result["cpu_phases"]:
        total = sum(used.values())
        print(
            f"    {name:34s} {wall:7.1f} {used['sandbox']:10.1f} {used['stub']:7.1f} "
            f"{used['controller']:7.1f} "
            f"{used['sandbox'] / wall:12.2f} {used['stub'] / wall:9.2f} {used['controller'] / wall:9.2f} "
            f"{total / (wall * cores):9.0%}"
        )
    setup = result["cpu_phases"][0]
    print(
        f"    setup: {setup[1] / result['count'] * 1000:.1f} ms wall and "
        f"{setup[2]['sandbox'] / result['count'] * 1000:.1f} ms sandbox CPU per Canary "
        f"(3 creates each: Deployment, HTTPRoute, Canary)"
    )
    run = [phase for phase in result["cpu_phases"] if phase[0].startswith("run")]
    run_wall = sum(phase[1] for phase in run)
    run_used = {k: sum(phase[2][k] for phase in run) for k in ("sandbox", "stub", "controller")}
    requests = result["run_requests"]
    print(
        f"    whole run: sandbox served {requests} API requests (watches excluded), "
        f"{run_used['sandbox'] / max(requests, 1) * 1000:.2f} ms sandbox CPU per request, "
        f"{run_used['controller'] / max(result['total_steps'], 1) * 1000:.2f} ms controller CPU per step "
        "(promotion's writes included)"
    )
    busiest = max(((k, v / run_wall) for k, v in run_used.items()), key=lambda p: p[1])
    lag = result["loop_lag"]
    if lag:
        print(
            f"    controller event-loop lag (a 100 ms timer, n={len(lag)}): "
            f"p50 {percentile(lag, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(lag, 0.99) * 1000:.0f} ms, max {lag[-1] * 1000:.0f} ms"
        )
    print(
        f"    bottleneck during the run: the {busiest[0]} at {busiest[1]:.2f} of a core"
        + (" (at or near saturation: it limits throughput)" if busiest[1] >= 0.8 else " (not saturated)")
        + f"; both cores {sum(run_used.values()) / (run_wall * cores):.0%} busy with these processes"
        + (f"; load average {os.getloadavg()[0]:.1f} (other work on the host takes the rest)")
    )


def report_step_cost(result: dict[str, Any]) -> None:
    steady = next((phase for phase in result["cpu_phases"] if phase[0] == "run: steady state"), None)
    window_steps = result.get("window_steps") or 0
    floor = result["floor"]
    if steady is None or not window_steps:
        print("  controller CPU per step: no steady-state window was seen")
        return
    controller_ms = steady[2]["controller"] / window_steps * 1000
    line = f"  controller CPU per step (steady state, {window_steps} steps): {controller_ms:.2f} ms"
    if floor is not None:
        floor_ms = floor["cpu"] / max(floor["steps"], 1) * 1000
        per_step = ", ".join(f"{k} {v / floor['steps']:.2f}" for k, v in sorted(floor["requests"].items()))
        line += (
            f"; floor (bare aiohttp loop, same writes and queries, {floor['steps']} steps in "
            f"{floor['wall']:.1f} s; per step: {per_step}): {floor_ms:.2f} ms; "
            f"ratio {controller_ms / max(floor_ms, 1e-9):.1f}x"
        )
    print(line)
    sent, shared = result["queries"]
    print(
        f"  Prometheus queries by the controller: {sent} sent, {shared} answered by sharing an identical one"
    )
    print(
        f"  controller RSS (this process): {result['rss_in_run_kib'] / 1024:.0f} MiB at the end of the "
        f"steady state, peak {result['rss_peak_kib'] / 1024:.0f} MiB"
    )


def report(result: dict[str, Any]) -> None:
    lateness = result["lateness"]
    print(
        f"\n== {result['count']} Canaries in {result['namespaces']} namespace(s), {len(STEPS)} steps each, "
        f"interval {result['interval']}s, client limit {result['qps']:g} QPS, "
        f"sandbox {'lean (no traffic simulation)' if result['lean'] else 'with traffic simulation'}, "
        f"new revisions {'spread over one interval' if result['spread'] else 'all at once'} =="
    )
    print(
        f"  initialization: {result['init_seconds']:.1f}s; "
        f"run (new revision to all Succeeded): {result['run_seconds']:.1f}s"
    )
    if result["stalled"] is not None:
        print(f"  RUN DID NOT FINISH within --run-timeout; phases at the end: {result['stalled']}")
    print(
        f"  API requests per step over the whole run ({result['total_steps']} weight steps, "
        "promotion included):"
    )
    print(per_step(result["run_delta"], result["total_steps"]))
    if "window_delta" in result:
        print(f"  API requests per step in the steady-state window ({result['window_steps']} steps):")
        print(per_step(result["window_delta"], result["window_steps"]))
        passes = result["window_passes"] / max(result["window_steps"], 1)
        print(f"  reconcile passes per step in the steady-state window: {passes:.2f}")
    if lateness:
        print(
            f"  step lateness, due wake-ups that moved a step or phase (n={len(lateness)}): "
            f"p50 {percentile(lateness, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(lateness, 0.99) * 1000:.0f} ms, max {lateness[-1] * 1000:.0f} ms, "
            f"mean {statistics.fmean(lateness) * 1000:.0f} ms"
        )
    report_step_cost(result)
    report_cpu(result)
    if result["shutdown_hung"] is not None:
        print("  CONTROLLER SHUTDOWN DID NOT FINISH within --shutdown-timeout; its tasks were:")
        print(result["shutdown_hung"])


async def main_async(count: int, baseline: int, options: argparse.Namespace) -> bool:
    """Measure and print; True when a controller could not be stopped (its tasks are left running)."""
    with tempfile.TemporaryDirectory(prefix="canaryd-bench-") as tmp:
        for sub in ("baseline", "scaled"):
            (Path(tmp) / sub).mkdir()
        base = await measure(baseline, Path(tmp) / "baseline", options) if baseline else None
        if base is not None:
            report(base)
            sys.stdout.flush()
        scaled = await measure(count, Path(tmp) / "scaled", options)
    report(scaled)
    if base is not None and base["lateness"] and scaled["lateness"]:
        print(
            f"\n  lateness p99 ratio {count} vs {baseline} Canaries: "
            f"{percentile(scaled['lateness'], 0.99) / max(percentile(base['lateness'], 0.99), 1e-6):.1f}x"
        )
    print(f"\n  host: {os.cpu_count()} CPUs; sandbox in its own process, controller in this one")
    return any(r is not None and r["shutdown_hung"] is not None for r in (base, scaled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=0, help="also measure this many Canaries first")
    parser.add_argument("--interval", type=int, default=30, help="analysis interval in seconds")
    parser.add_argument("--qps", type=float, default=200, help="controller's client-side QPS limit")
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--lean", action="store_true", help="run the sandbox without traffic simulation")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="release the new revisions evenly over one interval (a steady load) instead of all at once",
    )
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the bare aiohttp loop (the floor)"
    )
    parser.add_argument("--init-timeout", type=float, default=1200, help="seconds initialization may take")
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=1200,
        help="seconds after which an unfinished run is reported as is",
    )
    parser.add_argument(
        "--shutdown-timeout", type=float, default=60, help="seconds to wait for the controller to stop"
    )
    parser.add_argument(
        "--namespaces",
        type=int,
        default=1,
        help="spread the Canaries round robin over this many namespaces (bench-0, bench-1, ...)",
    )
    args = parser.parse_args()
    configure_logging("console", "warning")
    loop = asyncio.new_event_loop()
    hung = loop.run_until_complete(main_async(args.canaries, args.baseline, args))
    if hung:  # the sandboxes are stopped; a controller task that ignores cancellation would block exit
        sys.stdout.flush()
        os._exit(1)
    loop.close()


if __name__ == "__main__":
    main()
