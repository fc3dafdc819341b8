"""The controller's HTTP endpoints: /healthz, /readyz and /metrics.

/healthz says the process is alive. /readyz says the caches are synced and
the replica takes part in leader election (as leader or as standby: a
standby is ready, because it can take over at once). /metrics serves the
controller's own series in the Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger("canaryd.http")


class Endpoints:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]) -> None:
        self._registry = registry
        self._ready = ready
        self._runners: list[web.AppRunner] = []
        #: (host, port) actually bound for each endpoint, by name.
        self.bound: dict[str, tuple[str, int]] = {}

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self._ready()
        return web.Response(status=200 if ok else 503, text=f"{why}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, health: tuple[str, int], metrics: tuple[str, int]) -> None:
        plans: dict[tuple[str, int], list[str]] = {}
        if health[1] >= 0:
            plans.setdefault(health, []).append("health")
        if metrics[1] >= 0:
            if metrics == health and metrics[1] != 0:
                plans[health].append("metrics")
            else:
                plans.setdefault(metrics if metrics != health else (metrics[0], -2), []).append("metrics")
        for (host, port), names in plans.items():
            app = web.Application()
            if "health" in names:
                app.router.add_get("/healthz", self._healthz)
                app.router.add_get("/readyz", self._readyz)
            if "metrics" in names:
                app.router.add_get("/metrics", self._metrics)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, max(port, 0))
            try:
                await site.start()
            except OSError as exc:
                log.error("cannot serve endpoint; continuing without it", endpoints=names, error=str(exc))
                await runner.cleanup()
                continue
            self._runners.append(runner)
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            bound = sockets[0].getsockname()[:2] if sockets else (host, port)
            for name in names:
                self.bound[name] = (str(bound[0]), int(bound[1]))
            log.info("serving", endpoints=names, address=f"{bound[0]}:{bound[1]}")

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
