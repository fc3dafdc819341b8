"""Real requests through the Gateway, and the share of them that reached the canary at each weight.

Why this module exists: the end-to-end tests on the real cluster must show that the weight canaryd
writes on a route is the share of real requests the canary serves. :class:`RouteLoad` sends HTTP/1.1
requests (HTTPRoute) or unary gRPC calls over h2c (GRPCRoute) to Traefik's entry point on loopback,
with the route's hostname, at a steady rate, and records for each request when it was sent, how it
ended and which pod answered (the pods' application names itself in every answer, see
:mod:`cluster.app`). :func:`step_shares` cuts those samples at the moments the route's weights changed.

Every load is bounded in time and in count and stops by itself; it only ever talks to the address it
is given, which :class:`cluster.dataplane.DataPlane` makes a loopback one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import grpc

from cluster.app import POD_HEADER

GRPC_METHOD = "/canaryd.test.Echo/Call"


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent (time.monotonic()), how it ended, and the pod that answered."""

    sent: float
    code: str  # HTTP status ("200", "500", ...), a gRPC status name ("OK", "UNAVAILABLE"), or "error"
    pod: str | None  # "<namespace>/<name>", or None when no pod answered (the Gateway did, or nobody)


class RouteLoad:
    """Requests at ``rps`` to one route's hostname through a Gateway, until stopped or a limit is hit."""

    def __init__(
        self, gateway: str, host: str, *, kind: str = "HTTPRoute", rps: float = 20.0,
        max_seconds: float = 600.0, max_requests: int | None = None, timeout: float = 5.0,
        max_in_flight: int = 64,
    ) -> None:  # fmt: skip
        if rps <= 0:
            raise ValueError("rps must be positive")
        self.gateway = gateway.removeprefix("http://")
        self.host = host
        self.kind = kind
        self.rps = rps
        self.max_seconds = max_seconds
        self.max_requests = max_requests if max_requests is not None else int(rps * max_seconds)
        self.timeout = timeout
        self.samples: list[Sample] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> RouteLoad:
        self._task = asyncio.create_task(self.run(), name=f"load {self.host}")
        return self

    async def finished(self) -> list[Sample]:
        """Wait until a limit ends the load by itself; the samples."""
        if self._task is not None:
            await self._task
        return self.samples

    async def stop(self) -> list[Sample]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.samples

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        pending: set[asyncio.Task[None]] = set()
        async with contextlib.AsyncExitStack() as stack:
            if self.kind == "GRPCRoute":
                channel = grpc.aio.insecure_channel(
                    self.gateway, options=[("grpc.default_authority", self.host)]
                )
                stack.push_async_callback(channel.close)
                call = channel.unary_unary(GRPC_METHOD)

                async def one() -> Sample:
                    return await self._grpc(call)
            else:
                connector = aiohttp.TCPConnector(limit=0)
                session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))

                async def one() -> Sample:
                    return await self._http(session)

            for n in range(self.max_requests):
                due = began + n / self.rps
                if due - began > self.max_seconds:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
                if self._stop.is_set():
                    break
                await self._slots.acquire()
                task = asyncio.create_task(self._record(one))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=self.timeout + 1)

    async def _record(self, one: Callable[[], object]) -> None:
        try:
            sample = await one()  # type: ignore[misc]
            self.samples.append(sample)
        finally:
            self._slots.release()

    async def _http(self, session: aiohttp.ClientSession) -> Sample:
        sent = time.monotonic()
        try:
            async with session.get(
                f"http://{self.gateway}/", headers={"Host": self.host},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:  # fmt: skip
                await response.read()
                return Sample(sent, str(response.status), response.headers.get(POD_HEADER))
        except (aiohttp.ClientError, TimeoutError):
            return Sample(sent, "error", None)

    async def _grpc(self, call: grpc.aio.UnaryUnaryMultiCallable) -> Sample:
        sent = time.monotonic()
        rpc = call(b"ping", timeout=self.timeout)
        try:
            await rpc
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "error"
        try:
            metadata = dict(await rpc.initial_metadata() or ())
        except grpc.RpcError:
            metadata = {}
        pod = metadata.get(POD_HEADER)
        return Sample(sent, code, str(pod) if pod is not None else None)


async def until_answered(
    gateway: str, host: str, *, kind: str = "HTTPRoute", pods: Callable[[set[str]], bool] = bool,
    timeout: float = 30.0, rps: float = 20.0,
) -> set[str]:  # fmt: skip
    """Probe a route until the pods that answered satisfy ``pods`` (default: any pod); those pods.

    A Gateway answers a route it has not configured yet itself (404, UNIMPLEMENTED): wait here before
    measuring anything.
    """
    probe = RouteLoad(gateway, host, kind=kind, rps=rps, max_seconds=timeout).start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            answered = {s.pod for s in probe.samples if s.pod is not None}
            if answered and pods(answered):
                return answered
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{kind} {host}: not answered as expected within {timeout:g} s: {probe.samples[-3:]}"
                )
            await asyncio.sleep(0.1)
    finally:
        await probe.stop()


@dataclass(frozen=True)
class StepShare:
    """The requests sent while one canary weight was in force, and how many the canary answered."""

    weight: int  # the canary's weight (percent) canaryd had set
    seconds: float  # how long the window lasted (after the settling time)
    requests: int  # requests a pod answered in the window
    canary: int  # of those, answered by a canary pod
    unanswered: int  # requests in the window no pod answered (the Gateway's own errors, timeouts)

    @property
    def share(self) -> float:
        return 100.0 * self.canary / self.requests if self.requests else math.nan

    @property
    def tolerance(self) -> float:
        """Percentage points the share may be off: four binomial standard deviations, plus two requests.

        Traefik's weighted round robin is deterministic, so the share is usually exact; the margin
        covers a load balancer that draws at random and the requests in flight as the weights change.
        """
        if not self.requests:
            return math.inf
        p = self.weight / 100.0
        return 100.0 * (4 * math.sqrt(p * (1 - p) / self.requests) + 2 / self.requests)

    @property
    def within_tolerance(self) -> bool:
        return bool(self.requests) and abs(self.share - self.weight) <= self.tolerance


def step_shares(
    samples: Sequence[Sample], changes: Sequence[tuple[float, int]], is_canary: Callable[[str], bool],
    *, settle: float = 0.5, end: float | None = None,
) -> list[StepShare]:  # fmt: skip
    """Per weight in force (``changes``: (time.monotonic(), canary weight), oldest first), the share.

    A window starts ``settle`` seconds after its change (the Gateway applies a change a moment after the
    API server has it) and ends at the next change (or ``end``, or the last sample).
    """
    ordered = sorted(samples, key=lambda s: s.sent)
    stop = end if end is not None else (ordered[-1].sent + 1e-6 if ordered else 0.0)
    shares = []
    for index, (at, weight) in enumerate(changes):
        start = at + settle
        until = changes[index + 1][0] if index + 1 < len(changes) else stop
        window = [s for s in ordered if start <= s.sent < until]
        answered = [s for s in window if s.pod is not None]
        shares.append(
            StepShare(
                weight=weight,
                seconds=max(0.0, until - start),
                requests=len(answered),
                canary=sum(1 for s in answered if is_canary(s.pod or "")),
                unanswered=len(window) - len(answered),
            )
        )
    return shares


def canary_pods_of(target: str) -> Callable[[str], bool]:
    """Whether ``namespace/pod`` belongs to the canary (Deployment ``target``), not ``target-primary``."""

    def is_canary(pod: str) -> bool:
        name = pod.rsplit("/", 1)[-1]
        return name.startswith(f"{target}-") and not name.startswith(f"{target}-primary-")

    return is_canary


def format_table(title: str, shares: Sequence[StepShare]) -> str:
    """The table printed for every run: weight set, share measured, requests, tolerance."""
    lines = [
        title,
        f"  {'weight':>6}  {'measured':>8}  {'requests':>8}  {'canary':>6}  {'tolerance':>9}  {'no pod':>6}",
    ]
    for step in shares:
        lines.append(
            f"  {step.weight:>5}%  {step.share:>7.1f}%  {step.requests:>8}  {step.canary:>6}  "
            f"{'±' + format(step.tolerance, '.1f'):>9}  {step.unanswered:>6}"
        )
    return "\n".join(lines)
