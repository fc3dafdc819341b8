"""Benchmark: what the Prometheus adapter costs next to a direct HTTP call.

The adapter is canaryd's own aiohttp client with a per-server in-flight
limit, timeouts, retries and typed answers (sharing of identical queries off). This measures, against a real
Prometheus on loopback holding the analysis test dataset, the analysis
queries canaryd really sends (the sandbox success-rate and latency-p99
templates, rendered), at 1, 10, 20 and 40 concurrent callers:

- "direct": the same GET /api/v1/query sent with one shared aiohttp session,
  no limit (the baseline, measured in the same run);
- "adapter, limit=c": the adapter with a limit no lower than the callers, so
  only the adapter's own work is measured;
- "adapter, limit=L": the adapter as the controller runs it (default limit 8),
  where callers beyond L wait for a slot.

Printed per row: queries/s, p50 and p99 latency (ms) as the caller sees it,
the ratios to direct, and the most queries the adapter had in flight (checked
never to exceed its limit).

    python bench/bench_prometheus.py [--seconds 3] [--limit 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier
from canaryd.core.promql import Value, analysis_variables, render
from canaryd.sandbox.prometheus_server import PrometheusServer
from tests.fixtures.prometheus import ANALYSIS_DATASET, QUERY_TIME, to_openmetrics

CONCURRENCY = (1, 10, 20, 40)
SUCCESS_RATE = (
    '100 * (sum(rate(canaryd_sandbox_requests_total{namespace="{{ namespace }}", service="{{ service }}", '
    'code!~"5.."}[{{ interval }}])) or vector(0)) / sum(rate(canaryd_sandbox_requests_total{'
    'namespace="{{ namespace }}", service="{{ service }}"}[{{ interval }}]))'
)
LATENCY_P99 = (
    "1000 * histogram_quantile(0.99, sum by (le) (rate(canaryd_sandbox_request_duration_seconds_bucket{"
    'namespace="{{ namespace }}", service="{{ service }}"}[{{ interval }}])))'
)


def _queries() -> list[str]:
    variables = analysis_variables(
        namespace="shop", target="checkout", service="checkout-canary", route="checkout", interval="1m"
    )
    return [render(SUCCESS_RATE, variables), render(LATENCY_P99, variables)]


async def _drive(callers: int, seconds: float, one_query: Callable[[str], Awaitable[None]]) -> list[float]:
    """Run ``callers`` loops for ``seconds``; return each query's latency in seconds."""
    queries = _queries()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await one_query(queries[i % len(queries)])
            latencies.append(time.perf_counter() - started)
            i += 1

    await asyncio.gather(*(caller(n) for n in range(callers)))
    return latencies


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _direct(url: str, callers: int, seconds: float) -> list[float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(promql: str) -> None:
            params = {"query": promql, "time": f"{QUERY_TIME:.3f}"}
            async with session.get(f"{url}/api/v1/query", params=params) as response:
                body = await response.json()
                assert body["status"] == "success", body

        return await _drive(callers, seconds, one)


async def _adapter(url: str, callers: int, seconds: float, limit: int) -> tuple[list[float], int]:
    querier = PrometheusQuerier(max_in_flight=limit, retries=0)
    endpoint = PrometheusEndpoint(url)
    try:

        async def one(promql: str) -> None:
            result = await querier.query(endpoint, promql, at=QUERY_TIME)
            assert isinstance(result, Value), result

        latencies = await _drive(callers, seconds, one)
        return latencies, querier.max_in_flight_seen(endpoint.server)
    finally:
        querier.close()


async def main_async(seconds: float, limit: int) -> int:
    server = PrometheusServer()
    server.backfill(to_openmetrics(ANALYSIS_DATASET))
    server.start()
    print(f"Prometheus {server.url} (pid {server.pid}); {seconds:g}s per cell; controller limit {limit}")
    header = (
        f"{'callers':>7} {'variant':<18} {'q/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'q/s vs direct':>14} {'p99 vs direct':>14} {'max in flight':>14}"
    )
    print(header)
    print("-" * len(header))
    violations: list[str] = []
    try:
        await _direct(server.url, 4, 0.5)  # warm up Prometheus' caches and the connection pools
        for callers in CONCURRENCY:
            direct = await _direct(server.url, callers, seconds)
            base_qps = len(direct) / seconds
            base_p99 = _p(direct, 0.99)
            rows: list[tuple[str, list[float], str]] = [("direct aiohttp", direct, "-")]
            for variant_limit in sorted({max(callers, limit), limit}, reverse=True):
                latencies, seen = await _adapter(server.url, callers, seconds, variant_limit)
                if seen > variant_limit:
                    violations.append(f"{callers} callers, limit {variant_limit}: {seen} in flight")
                rows.append((f"adapter limit={variant_limit}", latencies, f"{seen}/{variant_limit}"))
            for name, latencies, in_flight in rows:
                qps = len(latencies) / seconds
                p99 = _p(latencies, 0.99)
                print(
                    f"{callers:>7} {name:<18} {qps:>8.0f} {statistics.median(latencies) * 1000:>8.2f} "
                    f"{p99 * 1000:>8.2f} {qps / base_qps:>14.2f} {p99 / base_p99:>14.2f} {in_flight:>14}"
                )
    finally:
        server.close()
    if violations:
        print("IN-FLIGHT LIMIT EXCEEDED: " + "; ".join(violations))
        return 1
    print("The adapter never had more queries in flight than its limit.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--limit", type=int, default=8, help="the adapter's in-flight limit, as deployed")
    args = parser.parse_args()
    return asyncio.run(main_async(args.seconds, args.limit))


if __name__ == "__main__":
    sys.exit(main())
