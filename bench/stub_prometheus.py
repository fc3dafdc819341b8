"""A stand-in Prometheus that answers every instant query at once with the value 100, for benchmarks.

The controller benchmark measures the controller and the Kubernetes API, not
Prometheus (bench/bench_prometheus.py measures that side against a real one),
but the controller must still send its queries over HTTP as it does in
production. This process answers ``/api/v1/query`` with a one-sample vector
and counts what it was asked (``/stats`` gives the counts as JSON).

    python bench/stub_prometheus.py --port-file FILE     # writes its port to FILE, runs until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

from aiohttp import web


def app() -> web.Application:
    counts = {"queries": 0, "distinct": 0}
    seen: set[tuple[str, str]] = set()

    async def query(request: web.Request) -> web.Response:
        params = request.query if request.method == "GET" else await request.post()
        key = (str(params.get("query", "")), str(params.get("time", "")))
        counts["queries"] += 1
        if key not in seen:
            seen.add(key)
            counts["distinct"] += 1
        stamp = float(params.get("time") or time.time())
        sample = {"metric": {}, "value": [stamp, "100"]}
        body = {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(counts)

    application = web.Application()
    application.router.add_route("*", "/api/v1/query", query)
    application.router.add_get("/stats", stats)
    return application


async def serve(port_file: Path) -> None:
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    asyncio.run(serve(parser.parse_args().port_file))


if __name__ == "__main__":
    main()
