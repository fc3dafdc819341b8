"""What a step costs the API server, and how late steps are, with many Canaries progressing at once.

The sandbox (API server, Deployment and Gateway simulators, traffic data plane)
runs as its own process (`canaryd sandbox`), so the controller does not share
its event loop; the controller runs in this process so its request counts and
step lateness can be read exactly. Every Canary gets a new revision at the same
moment and walks the same five steps.

The analysis is answered in-process (every metric passes) because this
measures the controller and the Kubernetes API, not Prometheus (see
bench/bench_prometheus.py for that side).

Printed:
- Kubernetes API requests per step, by verb and resource, for the whole run and
  for the steady-state window (every Canary past its first step, none yet
  at its last). Goal: two writes per step (route and status), no reads;
- step lateness (actual minus due) p50/p99/max;
- CPU seconds used by the sandbox process and by this (controller) process in
  each phase (setup, initialization, run), as a share of wall time (1.00 = one
  core busy; each process runs one event loop, so a process near 1.00 limits
  throughput) and as a share of the CPU both used, plus sandbox CPU per API
  request it served during the run. Read from /proc/PID/stat (Linux);
- the same figures for a baseline of 10 Canaries measured in the same run, and
  the ratio.

    python bench/bench_controller.py              # 1,000 Canaries and the baseline
    python bench/bench_controller.py --canaries 200
    python bench/bench_controller.py --canaries 3000 --baseline 0 --interval 30 --namespaces 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from canaryd import data  # noqa: E402
from canaryd.adapters.kube import CANARIES, DEPLOYMENTS, HTTP_ROUTES, ApiError, KubeClient  # noqa: E402
from canaryd.api.constants import Verdict  # noqa: E402
from canaryd.core.observations import MetricResult  # noqa: E402
from canaryd.runtime.controller import running_controller  # noqa: E402
from canaryd.runtime.log_setup import configure_logging  # noqa: E402
from canaryd.runtime.settings import Settings  # noqa: E402
from canaryd.sandbox.apply import CUSTOM_RESOURCE_DEFINITIONS, ensure_namespace  # noqa: E402
from canaryd.sandbox.sim.cluster_view import GATEWAY_CLASSES, GATEWAYS  # noqa: E402
from tests.runtime.world import canary, deployment, route  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STEPS = [10, 20, 30, 40, 50]
PASSING = {"name": "ok", "query": "vector(100)", "thresholdRange": {"min": 99}}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMarks:
    """Wall clock and CPU of the sandbox and of this process at named moments."""

    def __init__(self, sandbox_pid: int) -> None:
        self.sandbox_pid = sandbox_pid
        self.marks: list[tuple[str, float, float, float]] = []

    def mark(self, name: str) -> None:
        self.marks.append((name, time.monotonic(), cpu_seconds(self.sandbox_pid), cpu_seconds(os.getpid())))

    def phases(self) -> list[tuple[str, float, float, float]]:
        """(phase, wall seconds, sandbox CPU seconds, controller CPU seconds) between consecutive marks."""
        return [
            (name, wall - wall0, sandbox - sandbox0, controller - controller0)
            for (_, wall0, sandbox0, controller0), (name, wall, sandbox, controller) in zip(
                self.marks, self.marks[1:], strict=False
            )
        ]


class LatenessRecorder:
    def __init__(self) -> None:
        self.samples: list[float] = []

    def observe(self, value: float) -> None:
        self.samples.append(value)


async def pass_everything(canary: Any, metrics: Any, now: datetime) -> tuple[MetricResult, ...]:
    return tuple(MetricResult(name=m.check.name, verdict=Verdict.PASS, value=100.0) for m in metrics)


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


@contextlib.contextmanager
def sandbox_process(workdir: Path):
    kubeconfig = workdir / "kubeconfig"
    log = (workdir / "sandbox.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryd.cli.main", "sandbox", "--port", "0",
         "--kubeconfig-out", str(kubeconfig), "--ready-delay", "0.2"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the sandbox did not start: {(workdir / 'sandbox.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield kubeconfig, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
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


def phases(controller: Any) -> Counter[str]:
    return Counter((c.get("status") or {}).get("phase", "-") for c in controller.caches.canaries.items())


def steps_taken(controller: Any) -> int:
    return sum(int((c.get("status") or {}).get("step", 0)) for c in controller.caches.canaries.items())


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
    with sandbox_process(workdir) as (kubeconfig, process):
        cpu = CpuMarks(process.pid)
        cpu.mark("start")
        arranger = await KubeClient.connect(str(kubeconfig), qps=2000, burst=2000)
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
            )
            shutdown = contextlib.AsyncExitStack()
            controller = await shutdown.enter_async_context(
                running_controller(settings, analyzer=pass_everything)
            )
            try:
                lateness = LatenessRecorder()
                controller.metrics.step_lateness = lateness  # type: ignore[assignment]
                started = time.monotonic()
                while phases(controller).get("Initialized", 0) < count:
                    await asyncio.sleep(0.2)
                    if time.monotonic() - started > 300:
                        raise RuntimeError(f"initialization stalled: {phases(controller)}")
                init_seconds = time.monotonic() - started
                cpu.mark("initialization")
                before_run = request_counts(controller)
                run_started = time.monotonic()
                patch = [{"op": "add", "path": "/spec/template/spec/containers/0/image", "value": "app:2"}]
                await gather_limited(
                    [
                        arranger.patch(
                            DEPLOYMENTS,
                            namespace_of(i, options.namespaces),
                            f"app-{i:05d}",
                            patch,
                            content_type="application/json-patch+json",
                        )
                        for i in range(count)
                    ]
                )
                window_start: tuple[Counter[tuple[str, str]], int] | None = None
                window_end: tuple[Counter[tuple[str, str]], int] | None = None
                stalled: dict[str, int] | None = None
                while phases(controller).get("Succeeded", 0) < count:
                    await asyncio.sleep(0.1)
                    steps = [
                        int((c.get("status") or {}).get("step", 0))
                        for c in controller.caches.canaries.items()
                    ]
                    if window_start is None and min(steps) >= 1:
                        window_start = (request_counts(controller), steps_taken(controller))
                    if window_start is not None and window_end is None and max(steps) >= len(STEPS):
                        window_end = (request_counts(controller), steps_taken(controller))
                    if time.monotonic() - run_started > options.run_timeout:
                        stalled = dict(phases(controller))  # report what was measured, marked unfinished
                        break
                run_seconds = time.monotonic() - run_started
                cpu.mark("run (revision to Succeeded)")
                after_run = request_counts(controller)
                steps_taken_at_end = steps_taken(controller)
            finally:
                shutdown_hung = await stop_within(shutdown, options.shutdown_timeout)
        finally:
            await arranger.close()
    total_steps = count * len(STEPS) if stalled is None else steps_taken_at_end
    result: dict[str, Any] = {
        "count": count,
        "interval": options.interval,
        "qps": options.qps,
        "namespaces": min(options.namespaces, count),
        "init_seconds": init_seconds,
        "run_seconds": run_seconds,
        "run_delta": after_run - before_run,
        "total_steps": total_steps,
        "lateness": sorted(lateness.samples),
        "stalled": stalled,
        "shutdown_hung": shutdown_hung,
        "cpu_phases": cpu.phases(),
        # the controller's requests plus the bench's one Deployment patch per Canary
        "run_requests": count
        + sum(n for (verb, _), n in (after_run - before_run).items() if verb != "watch"),
    }
    if window_start is not None and window_end is not None:
        result["window_delta"] = window_end[0] - window_start[0]
        result["window_steps"] = window_end[1] - window_start[1]
    return result


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
        "  CPU by phase (share of wall: 1.00 = one core busy; share of CPU used: of sandbox + controller; "
        "the controller process also runs the bench's polling and its setup requests):"
    )
    print(
        f"    {'phase':28s} {'wall s':>7s} {'sandbox s':>10s} {'ctrl s':>7s} "
        f"{'sandbox/wall':>12s} {'ctrl/wall':>9s} {'sandbox share':>13s} {'host busy':>9s}"
    )
    for name, wall, sandbox, controller in result["cpu_phases"]:
        total = sandbox + controller
        print(
            f"    {name:28s} {wall:7.1f} {sandbox:10.1f} {controller:7.1f} "
            f"{sandbox / wall:12.2f} {controller / wall:9.2f} {sandbox / max(total, 1e-9):13.0%} "
            f"{total / (wall * cores):9.0%}"
        )
    setup = result["cpu_phases"][0]
    run = result["cpu_phases"][-1]
    print(
        f"    setup: {setup[1] / result['count'] * 1000:.1f} ms wall and "
        f"{setup[2] / result['count'] * 1000:.1f} ms sandbox CPU per Canary "
        f"(3 creates each: Deployment, HTTPRoute, Canary)"
    )
    requests = result["run_requests"]
    print(
        f"    run: sandbox served {requests} API requests (watches excluded), "
        f"{run[2] / max(requests, 1) * 1000:.2f} ms sandbox CPU per request, "
        f"{run[3] / max(result['total_steps'], 1) * 1000:.2f} ms controller CPU per step "
        "(sandbox CPU also covers its Deployment/Gateway simulators, traffic and watch fan-out)"
    )
    busiest = max(("sandbox", run[2] / run[1]), ("controller", run[3] / run[1]), key=lambda p: p[1])
    print(
        f"    during the run the busier process is the {busiest[0]} at {busiest[1]:.2f} of a core"
        + (" (at or near saturation: it limits throughput)" if busiest[1] >= 0.8 else " (not saturated)")
    )


def report(result: dict[str, Any]) -> None:
    lateness = result["lateness"]
    print(
        f"\n== {result['count']} Canaries in {result['namespaces']} namespace(s), {len(STEPS)} steps each, "
        f"interval {result['interval']}s, "
        f"client limit {result['qps']:g} QPS =="
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
    if lateness:
        print(
            f"  step lateness, due wake-ups that moved a step or phase (n={len(lateness)}): "
            f"p50 {percentile(lateness, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(lateness, 0.99) * 1000:.0f} ms, max {lateness[-1] * 1000:.0f} ms, "
            f"mean {statistics.fmean(lateness) * 1000:.0f} ms"
        )
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
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--interval", type=int, default=30, help="analysis interval in seconds")
    parser.add_argument("--qps", type=float, default=200, help="controller's client-side QPS limit")
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=600,
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
