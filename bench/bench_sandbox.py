"""Benchmark: how fast the sandbox API server answers with 10k objects stored.

The sandbox must not be the bottleneck when the controller is benchmarked at
10k canaries, so this measures, against a server in its own process holding
10,000 Deployments in 100 namespaces:

- GET of single objects and merge PATCHes (requests/s, p50/p99 latency),
- a cluster-wide LIST of all 10k objects (seconds),
- watch fan-out: events/s delivered to N concurrent watchers while writes happen,
- the server's CPU seconds per 1000 requests (to estimate its share in a controller run),

and a baseline in the same run: GET /healthz, which goes through the same HTTP
stack without touching the store. Figures are printed, nothing is asserted.

    python bench/bench_sandbox.py [--objects 10000] [--seconds 3] [--concurrency 32] [--watchers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def deployment(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, "bench": "yes"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.local/app:1.0.0",
                            "ports": [{"containerPort": 8080}],
                            "env": [{"name": "MODE", "value": "bench"}],
                        }
                    ]
                },
            },
        },
    }


async def serve(objects: int) -> None:
    """Child process: start the sandbox, load the objects, print the URL, run until stdin closes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from canaryd.sandbox.server.apiserver import SandboxApiServer

    server = SandboxApiServer(history_limit=10_000)
    store = server.store
    namespaces = 100
    for index in range(namespaces):
        store.create("namespaces", {"metadata": {"name": f"ns-{index}"}})
    for index in range(objects):
        store.create_ref("deployments", deployment(f"app-{index}", f"ns-{index % namespaces}"))
    await server.start()
    print(json.dumps({"url": server.url}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def load(
    http: aiohttp.ClientSession, seconds: float, concurrency: int, request: Any
) -> tuple[int, list[float], int]:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    failures = 0

    async def worker(worker_id: int) -> None:
        nonlocal failures
        rng = random.Random(worker_id)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status = await request(http, rng)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                failures += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return len(latencies), latencies, failures


def describe(
    name: str,
    count: int,
    latencies: list[float],
    failures: int,
    seconds: float,
    cpu: float,
    baseline: float | None,
) -> float:
    rate = count / seconds
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [0.0] * 99
    ratio = f"  ({rate / baseline:.2f}x baseline)" if baseline else ""
    print(
        f"{name:<22} {rate:>9.0f} req/s  p50 {cuts[49] * 1000:6.2f} ms  p99 {cuts[98] * 1000:6.2f} ms  "
        f"server CPU {cpu / max(count, 1) * 1000:6.3f} s/1000 req  failures {failures}{ratio}"
    )
    return rate


async def bench(args: argparse.Namespace) -> None:
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--objects", str(args.objects)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = json.loads(child.stdout.readline())["url"]
        print(f"sandbox with {args.objects} deployments ready in {time.monotonic() - started:.1f} s at {url}")
        connector = aiohttp.TCPConnector(limit=args.concurrency + args.watchers + 8)
        async with aiohttp.ClientSession(base_url=url, connector=connector) as http:

            def pick(rng: random.Random) -> str:
                index = rng.randrange(args.objects)
                return f"/apis/apps/v1/namespaces/ns-{index % 100}/deployments/app-{index}"

            async def healthz(http: aiohttp.ClientSession, rng: random.Random) -> int:
                async with http.get("/healthz") as response:
                    await response.read()
                    return response.status

            async def get(http: aiohttp.ClientSession, rng: random.Random) -> int:
                async with http.get(pick(rng)) as response:
                    await response.read()
                    return response.status

            async def patch(http: aiohttp.ClientSession, rng: random.Random) -> int:
                body = {"metadata": {"annotations": {"bench": str(rng.random())}}}
                async with http.patch(
                    pick(rng), json=body, headers={"Content-Type": "application/merge-patch+json"}
                ) as response:
                    await response.read()
                    return response.status

            baseline = None
            for name, request in (
                ("GET /healthz (base)", healthz),
                ("GET deployment", get),
                ("PATCH deployment", patch),
            ):
                cpu_before = cpu_seconds(child.pid)
                count, latencies, failures = await load(http, args.seconds, args.concurrency, request)
                rate = describe(
                    name,
                    count,
                    latencies,
                    failures,
                    args.seconds,
                    cpu_seconds(child.pid) - cpu_before,
                    baseline,
                )
                baseline = baseline or rate

            cpu_before = cpu_seconds(child.pid)
            list_started = time.perf_counter()
            async with http.get("/apis/apps/v1/deployments") as response:
                items = len((await response.json())["items"])
            print(
                f"{'LIST all deployments':<22} {time.perf_counter() - list_started:9.3f} s "
                f"for {items} items  "
                f"server CPU {cpu_seconds(child.pid) - cpu_before:.3f} s"
            )

            await watch_fan_out(http, args, child.pid, pick)
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def watch_fan_out(http: aiohttp.ClientSession, args: argparse.Namespace, pid: int, pick: Any) -> None:
    writes = args.writes
    start_rv = None
    async with http.get("/apis/apps/v1/deployments", params={"limit": "1"}) as response:
        start_rv = (await response.json())["metadata"]["resourceVersion"]
    received = [0] * args.watchers
    done = asyncio.Event()

    async def watcher(index: int) -> None:
        params = {"watch": "1", "resourceVersion": start_rv}
        async with http.get(
            "/apis/apps/v1/deployments", params=params, timeout=aiohttp.ClientTimeout(total=None)
        ) as response:
            async for line in response.content:
                if line.strip():
                    received[index] += 1
                    if received[index] >= writes and all(r >= writes for r in received):
                        done.set()
                    if received[index] >= writes:
                        return

    tasks = [asyncio.create_task(watcher(i)) for i in range(args.watchers)]
    await asyncio.sleep(0.5)
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    rng = random.Random(99)
    for offset in range(0, writes, args.concurrency):
        batch = min(args.concurrency, writes - offset)

        async def write() -> None:
            body = {"metadata": {"annotations": {"rollout": str(rng.random())}}}
            async with http.patch(
                pick(rng), json=body, headers={"Content-Type": "application/merge-patch+json"}
            ) as response:
                await response.read()

        await asyncio.gather(*(write() for _ in range(batch)))
    try:
        await asyncio.wait_for(done.wait(), 120)
    except TimeoutError:
        print("watch fan-out: not every watcher received every event within 120 s")
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(received)
    print(
        f"{'watch fan-out':<22} {delivered / elapsed:>9.0f} events/s delivered  ({writes} writes x "
        f"{args.watchers} watchers in {elapsed:.2f} s, server CPU {cpu_seconds(pid) - cpu_before:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.objects))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
