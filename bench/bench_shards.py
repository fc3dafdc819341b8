"""Whether three sharded replicas carry three times the Canaries of one at the same lateness and cost.

`canaryd run --shards S` splits the Canaries into S shards by a stable hash,
each held through its own Lease, so replicas can share the work. This bench
runs the same measurement twice, each on a fresh lean sandbox (no traffic
simulation) with the stub Prometheus of bench/bench_controller.py:

1. ONE replica (`canaryd run --shards S`, a child process) with N Canaries;
2. THREE replicas (three child processes, the same S) with 3N Canaries,

same interval, new revisions spread over one interval. Each replica is read
from outside, as an operator would read it: its /metrics (the
``canaryd_step_lateness_seconds`` histogram, ``canaryd_kubernetes_requests_total``,
``canaryd_reconciles_total``, ``canaryd_shards_held``), its CPU from
/proc/PID/stat, and which shards it holds from the shard Leases. Steps are
counted from the Canaries' status (the sum of ``status.step``), each credited
to the replica holding the Canary's shard.

Printed per run and replica: Canaries and shards held, steps taken in the
steady-state window (every Canary past its first step, none yet at its last),
step lateness p50/p99 over the whole run (estimated from the histogram's
buckets as Prometheus's histogram_quantile does, with the bucket it falls in),
CPU per step and CPU share of a core, API requests per step by verb, reconcile
passes per step; then the sandbox's CPU share (on a small host the sandbox
serving every replica may be the limit: read it before the ratios), and the
ratios of lateness and per-replica CPU between the two runs.

    python bench/bench_shards.py --canaries 150 --interval 60 --shards 12
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.bench_controller import (  # noqa: E402
    STEPS,
    arrange,
    cpu_seconds,
    namespace_of,
    release_revisions,
    sandbox_process,
    stub_prometheus,
)
from canaryd.adapters.kube import CANARIES, LEASES, KubeClient  # noqa: E402
from canaryd.adapters.shards import shard_lease_name  # noqa: E402
from canaryd.core.sharding import shard_of  # noqa: E402
from canaryd.sandbox.apply import ensure_namespace  # noqa: E402

LEASE_NAMESPACE = "canaryd-system"
LEASE_GROUP = "canaryd-leader"
NAMESPACE = namespace_of(0, 1)
LATENESS = "canaryd_step_lateness_seconds"


# -- pure parts: what a replica's /metrics says, and the table ----------------------------------


@dataclass
class Scrape:
    """The series of one /metrics answer this bench reads."""

    #: Cumulative count of the lateness histogram per upper bound (``le``), +Inf included.
    lateness_buckets: dict[float, float] = field(default_factory=dict)
    #: Kubernetes API requests by (verb, resource), all codes together.
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    reconciles: float = 0.0
    shards_held: float = 0.0


def parse_scrape(text: str) -> Scrape:
    """The lateness buckets, request and reconcile counters and shards held from Prometheus text."""
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{LATENESS}_bucket":
                scrape.lateness_buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == "canaryd_kubernetes_requests_total":
                scrape.requests[(sample.labels["verb"], sample.labels["resource"])] += int(sample.value)
            elif sample.name == "canaryd_reconciles_total":
                scrape.reconciles += sample.value
            elif sample.name == "canaryd_shards_held":
                scrape.shards_held = sample.value
    return scrape


def bucket_delta(later: Mapping[float, float], earlier: Mapping[float, float]) -> dict[float, float]:
    """Cumulative bucket counts observed between two scrapes of one histogram."""
    return {bound: count - earlier.get(bound, 0.0) for bound, count in later.items()}


def quantile_from_buckets(q: float, buckets: Mapping[float, float]) -> tuple[float, float, float]:
    """(estimate, lower bound, upper bound) of the q-quantile of a histogram's cumulative buckets.

    As Prometheus's histogram_quantile: find the bucket the q-th observation
    falls in and interpolate linearly inside it (the first bucket starts at 0).
    When it falls in the +Inf bucket, the estimate is the highest finite bound
    (nothing better is known) and the upper bound is +Inf. NaN when empty.
    """
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]) or buckets[bounds[-1]] <= 0:
        return math.nan, math.nan, math.nan
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower, lower, bound
            return lower + (bound - lower) * (rank - below) / (count - below), lower, bound
        lower, below = bound, count
    return math.nan, math.nan, math.nan


def format_seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "+Inf"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def describe_quantile(q: float, buckets: Mapping[float, float]) -> str:
    estimate, lower, upper = quantile_from_buckets(q, buckets)
    if math.isnan(estimate):
        return "-"
    return f"{format_seconds(estimate)} ({format_seconds(lower)} to {format_seconds(upper)})"


@dataclass
class ReplicaFigures:
    """One replica's share of a run, as measured."""

    identity: str
    canaries: int
    shards: int
    #: Steps its Canaries took in the steady-state window.
    window_steps: int
    #: Its CPU seconds and the wall seconds of the steady-state window.
    window_cpu: float
    window_wall: float
    #: Its API requests by (verb, resource) and reconcile passes in the window.
    window_requests: Counter[tuple[str, str]]
    window_passes: float
    #: Lateness histogram (cumulative buckets) from the first new revision to the last Succeeded.
    lateness: dict[float, float]


def replica_table(replicas: Sequence[ReplicaFigures]) -> list[str]:
    """One line per replica: Canaries, shards, steps, lateness, CPU per step and share, requests per step."""
    verbs = sorted({verb for r in replicas for verb, _ in r.window_requests if verb != "watch"})
    header = (
        f"    {'replica':10s} {'Canaries':>8s} {'shards':>6s} {'steps':>6s} {'lateness p50 (bucket)':>24s} "
        f"{'p99 (bucket)':>24s} {'CPU/step':>9s} {'CPU/wall':>8s} {'passes/step':>11s} "
        + " ".join(f"{verb + '/step':>10s}" for verb in verbs)
    )
    lines = [header]
    for r in replicas:
        steps = max(r.window_steps, 1)
        by_verb = Counter[str]()
        for (verb, _), n in r.window_requests.items():
            by_verb[verb] += n
        lines.append(
            f"    {r.identity:10s} {r.canaries:8d} {r.shards:6d} {r.window_steps:6d} "
            f"{describe_quantile(0.5, r.lateness):>24s} {describe_quantile(0.99, r.lateness):>24s} "
            f"{r.window_cpu / steps * 1000:6.2f} ms {r.window_cpu / max(r.window_wall, 1e-9):8.2f} "
            f"{r.window_passes / steps:11.2f} " + " ".join(f"{by_verb[verb] / steps:10.2f}" for verb in verbs)
        )
    return lines


def merged_lateness(replicas: Sequence[ReplicaFigures]) -> dict[float, float]:
    """The lateness histograms of several replicas added up (same bucket bounds)."""
    total: Counter[float] = Counter()
    for r in replicas:
        total.update(r.lateness)
    return dict(total)


# -- the run ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def replicas(
    identities: Sequence[str],
    kubeconfig: Path,
    prometheus_url: str,
    workdir: Path,
    options: argparse.Namespace,
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], str]]]:
    """`canaryd run --shards S` per identity: (process, its /metrics URL)."""
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    logs = []
    try:
        for identity in identities:
            port = free_port()
            log = (workdir / f"{identity}.log").open("wb")
            logs.append(log)
            process = subprocess.Popen(
                [sys.executable, "-m", "canaryd.cli.main", "run", "--kubeconfig", str(kubeconfig),
                 "--prometheus-url", prometheus_url, "--namespaces", NAMESPACE,
                 "--shards", str(options.shards), "--leader-election-identity", identity,
                 "--health-address", "0", "--metrics-address", f"127.0.0.1:{port}",
                 "--qps", str(options.qps), "--burst", str(options.burst),
                 "--log-format", "json", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
            started[identity] = (process, f"http://127.0.0.1:{port}/metrics")
        yield started
    finally:
        for process, _ in started.values():
            process.terminate()
        for process, _ in started.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


async def scrape(session: aiohttp.ClientSession, url: str) -> Scrape:
    async with session.get(url) as response:
        return parse_scrape(await response.text())


async def shard_holders(client: KubeClient, shards: int) -> dict[int, str]:
    names = {shard_lease_name(LEASE_GROUP, shard): shard for shard in range(shards)}
    holders = {}
    for lease in (await client.list(LEASES, LEASE_NAMESPACE))["items"]:
        shard = names.get(lease["metadata"]["name"])
        holder = (lease.get("spec") or {}).get("holderIdentity")
        if shard is not None and holder:
            holders[shard] = str(holder)
    return holders


async def canary_statuses(client: KubeClient) -> dict[str, dict[str, Any]]:
    return {
        item["metadata"]["name"]: item.get("status") or {}
        for item in (await client.list(CANARIES, NAMESPACE))["items"]
    }


def steps_by_replica(
    statuses: Mapping[str, Mapping[str, Any]], holders: Mapping[int, str], shards: int
) -> Counter[str]:
    """The sum of status.step of each replica's Canaries (by the holder of the Canary's shard)."""
    steps: Counter[str] = Counter()
    for name, status in statuses.items():
        holder = holders.get(shard_of(NAMESPACE, name, shards), "?")
        steps[holder] += int(status.get("step", 0))
    return steps


@dataclass
class Snapshot:
    wall: float
    cpu: dict[str, float]
    sandbox_cpu: float
    scrapes: dict[str, Scrape]
    steps: Counter[str]


async def measure(
    count: int, identities: Sequence[str], workdir: Path, options: argparse.Namespace
) -> dict[str, Any]:
    with (
        sandbox_process(workdir, lean=True) as (kubeconfig, sandbox),
        stub_prometheus(workdir) as (prometheus_url, _stub),
    ):
        client = await KubeClient.connect(str(kubeconfig), qps=5000, burst=5000)
        session = aiohttp.ClientSession()
        try:
            await ensure_namespace(client, LEASE_NAMESPACE)
            await arrange(client, count, options.interval, 1)
            with replicas(identities, kubeconfig, prometheus_url, workdir, options) as running:
                share = options.shards // len(identities)
                deadline = time.monotonic() + options.init_timeout
                holders: dict[int, str] = {}
                while True:  # every shard held, evenly, and every Canary initialized
                    await asyncio.sleep(2)
                    for identity, (process, _) in running.items():
                        if process.poll() is not None:
                            raise RuntimeError(
                                f"replica {identity} exited: "
                                + (workdir / f"{identity}.log").read_text()[-2000:]
                            )
                    holders = await shard_holders(client, options.shards)
                    held = Counter(holders.values())
                    statuses = await canary_statuses(client)
                    phases = Counter(s.get("phase", "-") for s in statuses.values())
                    if (
                        len(holders) == options.shards
                        and set(held) == set(identities)
                        and min(held.values()) >= share
                        and phases.get("Initialized", 0) == count
                    ):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"not settled: shards held {dict(held)}, phases {dict(phases)}")
                pids = {identity: process.pid for identity, (process, _) in running.items()}

                async def snapshot(scraped: bool) -> tuple[Snapshot, dict[str, dict[str, Any]]]:
                    """Where every Canary is; with `scraped`, also each replica's /metrics and CPU."""
                    statuses = await canary_statuses(client)
                    scrapes = (
                        {i: await scrape(session, url) for i, (_, url) in running.items()} if scraped else {}
                    )
                    cpu = {i: cpu_seconds(pid) for i, pid in pids.items()}
                    steps = steps_by_replica(statuses, holders, options.shards)
                    return Snapshot(time.monotonic(), cpu, cpu_seconds(sandbox.pid), scrapes, steps), statuses

                before, _ = await snapshot(scraped=True)
                releasing = asyncio.create_task(release_revisions(client, count, 1, options.interval))
                window_start = window_end = None
                run_deadline = time.monotonic() + options.run_timeout
                unfinished: dict[str, int] | None = None
                while True:
                    await asyncio.sleep(options.poll)
                    _, statuses = await snapshot(scraped=False)
                    steps = [int(s.get("step", 0)) for s in statuses.values()]
                    if window_start is None and releasing.done() and min(steps) >= 1:
                        window_start, statuses = await snapshot(scraped=True)
                    if window_start is not None and window_end is None and max(steps) >= len(STEPS):
                        window_end, statuses = await snapshot(scraped=True)
                    phases = Counter(s.get("phase", "-") for s in statuses.values())
                    if phases.get("Succeeded", 0) == count:
                        break
                    if time.monotonic() > run_deadline:
                        unfinished = dict(phases)
                        break
                await releasing
                after, _ = await snapshot(scraped=True)
                final_holders = await shard_holders(client, options.shards)
        finally:
            await session.close()
            await client.close()
    if window_start is None or window_end is None:
        raise RuntimeError("no steady-state window was seen (every Canary past step 1, none at the last)")
    owned = Counter(holders[shard_of(NAMESPACE, f"app-{i:05d}", options.shards)] for i in range(count))
    figures = [
        ReplicaFigures(
            identity=i,
            canaries=owned[i],
            shards=int(window_end.scrapes[i].shards_held),
            window_steps=window_end.steps[i] - window_start.steps[i],
            window_cpu=window_end.cpu[i] - window_start.cpu[i],
            window_wall=window_end.wall - window_start.wall,
            window_requests=window_end.scrapes[i].requests - window_start.scrapes[i].requests,
            window_passes=window_end.scrapes[i].reconciles - window_start.scrapes[i].reconciles,
            lateness=bucket_delta(after.scrapes[i].lateness_buckets, before.scrapes[i].lateness_buckets),
        )
        for i in identities
    ]
    return {
        "count": count,
        "replicas": figures,
        "window_wall": window_end.wall - window_start.wall,
        "sandbox_window_cpu": window_end.sandbox_cpu - window_start.sandbox_cpu,
        "run_wall": after.wall - before.wall,
        "holders_changed": final_holders != holders,
        "unfinished": unfinished,
    }


def report(result: dict[str, Any], options: argparse.Namespace) -> None:
    figures: list[ReplicaFigures] = result["replicas"]
    print(
        f"\n== {len(figures)} replica(s), {result['count']} Canaries, {options.shards} shards, "
        f"{len(STEPS)} steps each, interval {options.interval}s, revisions spread over one interval =="
    )
    print(
        f"  run (first new revision to every Canary Succeeded): {result['run_wall']:.0f} s; "
        f"steady-state window {result['window_wall']:.0f} s"
    )
    if result["unfinished"] is not None:
        print(f"  RUN DID NOT FINISH within --run-timeout; phases at the end: {result['unfinished']}")
    if result["holders_changed"]:
        print("  NOTE: a shard changed hands during the run")
    print("  per replica (lateness over the whole run; CPU, requests and passes in the steady-state window):")
    for line in replica_table(figures):
        print(line)
    lateness = merged_lateness(figures)
    print(
        f"  all replicas: {int(lateness.get(math.inf, 0))} late-step observations, lateness p50 "
        f"{describe_quantile(0.5, lateness)}, p99 {describe_quantile(0.99, lateness)}"
    )
    print(
        f"  sandbox (one process serving every replica): "
        f"{result['sandbox_window_cpu'] / result['window_wall']:.2f} of a core in the steady-state window "
        f"(the host has {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f})"
    )


def compare(one: dict[str, Any], three: dict[str, Any]) -> None:
    single: ReplicaFigures = one["replicas"][0]
    several: list[ReplicaFigures] = three["replicas"]

    def quantile(q: float, buckets: Mapping[float, float]) -> float:
        return quantile_from_buckets(q, buckets)[0]

    def cpu_share(r: ReplicaFigures) -> float:
        return r.window_cpu / max(r.window_wall, 1e-9)

    def cpu_per_step(r: ReplicaFigures) -> float:
        return r.window_cpu / max(r.window_steps, 1)

    merged = merged_lateness(several)
    print(f"\n== {len(several)} replicas with {three['count']} Canaries against 1 with {one['count']} ==")
    for q in (0.5, 0.99):
        print(
            f"  lateness p{q * 100:g}: {format_seconds(quantile(q, merged))} against "
            f"{format_seconds(quantile(q, single.lateness))}: ratio "
            f"{quantile(q, merged) / max(quantile(q, single.lateness), 1e-9):.2f}"
        )
    mean_share = sum(cpu_share(r) for r in several) / len(several)
    mean_per_step = sum(cpu_per_step(r) for r in several) / len(several)
    print(
        f"  CPU per replica (share of a core, mean of {len(several)}): {mean_share:.3f} against "
        f"{cpu_share(single):.3f}: ratio {mean_share / max(cpu_share(single), 1e-9):.2f}"
    )
    print(
        f"  CPU per step per replica (mean): {mean_per_step * 1000:.2f} ms against "
        f"{cpu_per_step(single) * 1000:.2f} ms: ratio {mean_per_step / max(cpu_per_step(single), 1e-9):.2f}"
    )
    print(
        f"  sandbox: {three['sandbox_window_cpu'] / three['window_wall']:.2f} against "
        f"{one['sandbox_window_cpu'] / one['window_wall']:.2f} of a core"
    )


async def main_async(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="canaryd-bench-shards-") as tmp:
        (Path(tmp) / "one").mkdir()
        (Path(tmp) / "three").mkdir()
        one = await measure(options.canaries, ["replica-1"], Path(tmp) / "one", options)
        report(one, options)
        sys.stdout.flush()
        three = await measure(
            options.canaries * 3, ["replica-1", "replica-2", "replica-3"], Path(tmp) / "three", options
        )
        report(three, options)
        compare(one, three)
    bounds = ", ".join(format_seconds(b) for b in sorted(one["replicas"][0].lateness) if not math.isinf(b))
    print(f"\n  lateness histogram bucket bounds: {bounds}, +Inf (estimates interpolate inside a bucket)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=150, help="Canaries for one replica (three get 3x)")
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--interval", type=int, default=60, help="analysis interval in seconds")
    parser.add_argument("--qps", type=float, default=600, help="each replica's client-side QPS limit")
    parser.add_argument("--burst", type=int, default=1200)
    parser.add_argument("--poll", type=float, default=3.0, help="seconds between the bench's looks")
    parser.add_argument("--init-timeout", type=float, default=600)
    parser.add_argument("--run-timeout", type=float, default=1200)
    options = parser.parse_args()
    if options.shards % 3:
        parser.error("--shards must split evenly over three replicas")
    asyncio.run(main_async(options))


if __name__ == "__main__":
    main()
