"""Stand-ins for a canary's Service on loopback, counting what the load tester sends them.

The sandbox simulates its data plane (no process serves a Service's address),
so the load tester's requests go to these real servers instead: an HTTP one
and a gRPC one, each recording arrival times and the most requests it had in
flight at once, and answering after a set delay with a set status.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import grpc.aio
from aiohttp import web


@dataclass
class Counts:
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    hosts: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)

    def enter(self) -> None:
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def ahead_of_rate(self, rps: float, since: float) -> list[tuple[int, float]]:
        """Arrivals earlier than a rate of ``rps`` from ``since`` allows: the n-th (from 0) before n/rps.

        Empty when the rate held. Delays on the way only make arrivals later,
        so this holds at the receiver whenever it holds at the sender.
        """
        return [(n, at - since) for n, at in enumerate(sorted(self.arrivals)) if at - since < n / rps - 1e-6]


class HttpBackend:
    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.counts = Counts()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.counts.enter()
        self.counts.hosts.add(request.headers.get("Host", ""))
        self.counts.methods.add(request.method)
        await request.read()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(status=self.status, text="served\n")
        finally:
            self.counts.in_flight -= 1

    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


#: grpc.health.v1.HealthCheckResponse{status: SERVING}, protobuf-encoded.
SERVING = b"\x08\x01"


class GrpcBackend:
    """A gRPC server answering ``/grpc.health.v1.Health/Check`` (and nothing else) with raw bytes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.counts = Counts()
        #: Values of the x-canary metadata the calls carried.
        self.tags: set[str] = set()
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def _check(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.counts.enter()
        metadata = dict(context.invocation_metadata() or ())
        self.tags.add(str(metadata.get("x-canary", "")))
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return SERVING
        finally:
            self.counts.in_flight -= 1

    async def start(self) -> int:
        handler = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {"Check": grpc.unary_unary_rpc_method_handler(self._check)},
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
