"""Benchmark: what one webhook call costs the caller, next to a bare HTTP POST of the same bytes.

A step that calls a ``rollout`` hook or a gate waits for the call; this
measures the delivery adapter's share of that wait. A child process serves a
loopback receiver that answers 200 ``{"message": "ok"}`` at once; the bench
process sends, one after another and then from 10 callers at once:

- "bare": the payload's bytes POSTed with one shared aiohttp session;
- "call_webhook": ``canaryd.core.webhooks.build_payload`` + ``WebhookSender.call_webhook``
  (encode, headers, timeout, classification, JSON answer parsed), unsigned
  and signed (HMAC-SHA256).

Printed per row: calls/s, p50 and p99 latency (ms) and the ratio of p50 to
bare. The receiver's own time is in every row alike.

    python bench/bench_webhooks.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canaryd.adapters.webhook_delivery import DeliveryPolicy, WebhookSender
from canaryd.core.webhooks import HookType, build_payload, encode_payload


def _serve(ports: Any) -> None:
    from aiohttp import web

    async def main() -> None:
        async def answer(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"message": "ok"})

        app = web.Application()
        app.router.add_post("/", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        ports.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def _payload() -> dict[str, Any]:
    return build_payload(
        hook=HookType.ROLLOUT,
        name="payments-api",
        namespace="payments",
        phase="Progressing",
        revision="7d9f6c5b8",
        weight=10,
        step=2,
        failed_checks=0,
        now=datetime.now(UTC),
        interval="1m",
        metadata={"url": "http://payments-api-canary.payments:8080/", "rps": "20", "concurrency": "4"},
    )


async def _measure(call: Callable[[], Awaitable[None]], calls: int, callers: int) -> dict[str, float]:
    latencies: list[float] = []
    per_caller = calls // callers

    async def caller() -> None:
        for _ in range(per_caller):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": len(latencies) / wall,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def run(calls: int) -> None:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{parent.recv()}/"
        policy = DeliveryPolicy(timeout=10, retries=0)
        async with aiohttp.ClientSession() as http:
            sender = WebhookSender(http)

            async def bare() -> None:
                async with http.post(
                    url, data=encode_payload(_payload()), headers={"Content-Type": "application/json"}
                ) as answer:
                    await answer.read()

            async def unsigned() -> None:
                result = await sender.call_webhook(url, _payload(), policy=policy)
                assert result.ok

            async def signed() -> None:
                result = await sender.call_webhook(url, _payload(), policy=policy, signing_key=b"k" * 32)
                assert result.ok

            for _ in range(200):  # warm the connection pool and the code paths
                await unsigned()
            for callers in (1, 10):
                print(f"{callers} caller(s), {calls} calls")
                base = await _measure(bare, calls, callers)
                for label, call in (
                    ("bare", bare),
                    ("call_webhook", unsigned),
                    ("call_webhook, signed", signed),
                ):
                    figures = base if call is bare else await _measure(call, calls, callers)
                    print(
                        f"  {label:<22} {figures['rate']:7.0f} calls/s  p50 {figures['p50']:6.2f} ms  "
                        f"p99 {figures['p99']:6.2f} ms  p50 x{figures['p50'] / base['p50']:4.2f}"
                    )
    finally:
        server.terminate()
        server.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    asyncio.run(run(parser.parse_args().calls))


if __name__ == "__main__":
    main()
