"""Benchmark: how many requests a second ``canaryd loadtest`` sends, next to a bare client loop.

A child process serves a loopback HTTP endpoint (aiohttp, answers 200 at
once) and a gRPC health service (grpcio); the bench process runs the load
tester (with a test host mapping a Service name to 127.0.0.1) and starts each
load through a real ``rollout`` webhook call, with ``wait: "true"`` so the
answer carries the job's figures. For each protocol and concurrency:

- "bare": the same requests sent by a plain loop of ``c`` workers on one
  aiohttp session or one grpcio channel, no pacing, no accounting (the
  baseline, measured in the same run);
- "loadtest": a job asking for far more than it can send (rate 1e6), so
  concurrency and CPU, not the token bucket, set the pace;

and one paced row per protocol at 200 req/s, to show the asked rate is kept.
Each row is run ``--repeat`` times and the run with the median rate printed,
because a shared machine's figures vary from run to run.
Printed per row: requests/s, the ratio to bare, mean latency, the bench
process's CPU milliseconds per 1,000 requests, and the most requests in
flight. The server is another process, so its CPU does not slow the sender
(on a 2-core machine they still share the cores with everything else).

    python bench/bench_loadtest.py [--seconds 3] [--concurrency 1,4,16,64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canaryd.adapters.webhook_delivery import DeliveryPolicy, WebhookSender
from canaryd.core.webhooks import HookType, build_payload
from canaryd.loadtest.server import LoadTester
from canaryd.loadtest.settings import LoadTestSettings

HTTP_HOST = "bench-canary.bench"
GRPC_HOST = "bench-grpc-canary.bench"
SERVING = b"\x08\x01"


def _serve(ports: Any) -> None:
    """The child process: an HTTP and a gRPC endpoint on loopback, until terminated."""
    import grpc
    import grpc.aio
    from aiohttp import web

    async def main() -> None:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        async def check(request: bytes, context: Any) -> bytes:
            return SERVING

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
                "Check": grpc.unary_unary_rpc_method_handler(check)}),)
        )  # fmt: skip
        grpc_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ports.send((http_port, grpc_port))
        await asyncio.Event().wait()

    asyncio.run(main())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _bare(send: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> dict[str, float]:
    done = 0
    latency = 0.0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, latency
        while time.monotonic() < end:
            started = time.monotonic()
            await send()
            latency += time.monotonic() - started
            done += 1

    cpu, started = _cpu(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.monotonic() - started
    return {"rps": done / wall, "latency": latency / max(done, 1), "cpu": (_cpu() - cpu) / max(done, 1) * 1e6,
            "in_flight": concurrency}  # fmt: skip


async def _bare_http(port: int, concurrency: int, seconds: float) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def send() -> None:
            async with http.get(f"http://127.0.0.1:{port}/") as answer:
                await answer.read()

        return await _bare(send, concurrency, seconds)


async def _bare_grpc(port: int, concurrency: int, seconds: float) -> dict[str, float]:
    import grpc.aio

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")

        async def send() -> None:
            await call(b"", timeout=10)

        return await _bare(send, concurrency, seconds)


async def _loadtest(tester: LoadTester, sender: WebhookSender, url: str, concurrency: int, seconds: float,
                    rps: float) -> dict[str, float]:  # fmt: skip
    assert tester.bound is not None
    payload = build_payload(
        hook=HookType.ROLLOUT, name="bench", namespace="bench", phase="Progressing", revision="r", weight=10,
        step=1, failed_checks=0, now=datetime.now(UTC),
        metadata={"url": url, "rps": f"{rps:g}", "concurrency": str(concurrency), "duration": f"{seconds:g}s",
                  "wait": "true"},
    )  # fmt: skip
    cpu = _cpu()
    result = await sender.call_webhook(f"http://127.0.0.1:{tester.bound[1]}/", payload,
                                       policy=DeliveryPolicy(timeout=seconds + 60, retries=0))  # fmt: skip
    if not result.ok:
        raise SystemExit(f"the load tester refused the bench's load: {result.describe()}")
    stats = result.answer["job"]["stats"]
    return {"rps": stats["requestsPerSecond"], "latency": stats["meanLatencySeconds"] or 0.0,
            "cpu": (_cpu() - cpu) / max(stats["sent"], 1) * 1e6, "in_flight": stats["maxInFlight"],
            "errors": stats["errors"]}  # fmt: skip


def _row(label: str, figures: dict[str, float], base: float | None) -> str:
    ratio = f"{figures['rps'] / base:5.2f}" if base else "    -"
    errors = f"  errors {int(figures['errors'])}" if figures.get("errors") else ""
    return (f"  {label:<28} {figures['rps']:9.0f} req/s  x{ratio}  {figures['latency'] * 1000:7.2f} ms  "
            f"{figures['cpu']:7.0f} CPU ms/1k  in flight {int(figures['in_flight']):3d}{errors}")  # fmt: skip


async def _median(measure: Callable[[], Awaitable[dict[str, float]]], repeat: int) -> dict[str, float]:
    runs = [await measure() for _ in range(repeat)]
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


async def run(seconds: float, concurrencies: list[int], repeat: int) -> None:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        http_port, grpc_port = parent.recv()
        settings = LoadTestSettings(
            address="127.0.0.1:0", namespaces=["bench"], max_rps=1e6, max_concurrency=max(concurrencies),
            test_hosts=[f"{HTTP_HOST}=127.0.0.1", f"{GRPC_HOST}=127.0.0.1"], log_level="warning",
        )  # fmt: skip
        import logging

        logging.getLogger().setLevel(logging.WARNING)
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        tester = LoadTester(settings)
        await tester.start()
        sender = WebhookSender()
        try:
            for protocol, bare, url in (
                ("HTTP", lambda c: _bare_http(http_port, c, seconds), f"http://{HTTP_HOST}:{http_port}/"),
                ("gRPC", lambda c: _bare_grpc(grpc_port, c, seconds), f"grpc://{GRPC_HOST}:{grpc_port}"),
            ):
                print(f"{protocol} ({seconds:g} s per run, median of {repeat})")
                for c in concurrencies:
                    base = await _median(lambda c=c, bare=bare: bare(c), repeat)
                    print(_row(f"bare, c={c}", base, None))
                    figures = await _median(
                        lambda c=c, url=url: _loadtest(tester, sender, url, c, seconds, 1e6), repeat
                    )
                    print(_row(f"loadtest, c={c}", figures, base["rps"]))
                paced = await _median(
                    lambda url=url: _loadtest(tester, sender, url, 16, seconds, 200), repeat
                )
                print(_row("loadtest, c=16, asked 200/s", paced, None))
        finally:
            await sender.close()
            await tester.stop()
    finally:
        server.terminate()
        server.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median by rate is printed")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, [int(c) for c in args.concurrency.split(",")], args.repeat))


if __name__ == "__main__":
    main()
