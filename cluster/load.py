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
from typing import Any

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


class AppliedWeights:
    """When Traefik applied each canary weight of one route: its API, polled every ``interval`` seconds.

    Traefik needs a moment (under load, a second or two) between the API server storing new weights
    and its routers using them; measuring from the API server's moment would blame canaryd for that.
    ``changes`` holds (time.monotonic(), canary weight in percent) for every weight Traefik showed.
    """

    def __init__(
        self, api: str, kind: str, namespace: str, route: str, canary_service: str, *,
        interval: float = 0.1, max_seconds: float = 600.0,
    ) -> None:  # fmt: skip
        self.api = api.rstrip("/")
        self.prefix = f"{kind.lower()}-{namespace}-{route}-gw-"
        self.canary = f"-svc-{namespace}-{canary_service}-"
        self.interval, self.max_seconds = interval, max_seconds
        self.changes: list[tuple[float, int]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def weight(self, services: list[dict[str, Any]]) -> int | None:
        """The canary's percentage in the route's weighted service; None while Traefik has no such route."""
        total = canary = 0
        found = False
        for service in services:
            name = str(service.get("name", ""))
            weighted = service.get("weighted")
            if not (name.startswith(self.prefix) and name.endswith("-wrr@kubernetesgateway")):
                continue
            found = True
            for child in (weighted or {}).get("services") or []:
                weight = int(child.get("weight", 1))
                total += weight
                canary += weight if self.canary in str(child.get("name", "")) else 0
        if not found:
            return None
        return round(100 * canary / total) if total else 0

    def start(self) -> AppliedWeights:
        self._task = asyncio.create_task(self.run(), name=f"applied weights {self.prefix}")
        return self

    async def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.changes

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_seconds
        url = f"{self.api}/api/http/services"
        params = {"search": self.prefix, "per_page": "1000"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while not self._stop.is_set() and loop.time() < deadline:
                try:
                    async with session.get(url, params=params) as response:
                        services = await response.json()
                    weight = self.weight(services) if isinstance(services, list) else None
                    if weight is not None and (not self.changes or self.changes[-1][1] != weight):
                        self.changes.append((time.monotonic(), weight))
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)


@dataclass(frozen=True)
class StepShare:
    """The requests sent while one canary weight was in force, and how many the canary answered."""

    weight: int  # the canary's weight (percent) canaryd (or a person) set
    lag: float | None  # seconds from the API server having the weight to the Gateway using it
    seconds: float  # how long the window lasted
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


def _applied_at(
    changes: Sequence[tuple[float, int]], applied: Sequence[tuple[float, int]]
) -> list[float | None]:
    """For each change, when the Gateway started using it (None: it never showed that weight alone).

    Matched in order: change i is the first applied entry with its weight after change i-1's.
    """
    starts: list[float | None] = []
    cursor = 0
    for at, weight in changes:
        found = None
        for index in range(cursor, len(applied)):
            seen_at, seen = applied[index]
            if seen == weight and seen_at >= at - 0.2:  # the poll may see it a moment before our watch
                found, cursor = seen_at, index + 1
                break
        starts.append(found)
    return starts


def step_shares(
    samples: Sequence[Sample], changes: Sequence[tuple[float, int]], is_canary: Callable[[str], bool],
    *, applied: Sequence[tuple[float, int]] | None = None, settle: float = 0.2, end: float | None = None,
) -> list[StepShare]:  # fmt: skip
    """Per weight set (``changes``: (time.monotonic(), canary weight), oldest first), the canary's share.

    A window starts when the Gateway applied the weight (``applied``, as :class:`AppliedWeights`
    records it; without it, at the change itself) plus ``settle`` seconds for requests in flight, and
    ends when the Gateway showed another weight (without ``applied``: at the next change), or at
    ``end``, or after the last sample. A weight the Gateway never showed (overtaken by the next one)
    gets an empty window. ``lag`` is known for changes made while ``applied`` was being recorded.
    """
    ordered = sorted(samples, key=lambda s: s.sent)
    stop = end if end is not None else (ordered[-1].sent + 1e-6 if ordered else 0.0)
    starts = _applied_at(changes, applied) if applied is not None else [at for at, _ in changes]
    watched_from = applied[0][0] if applied else -math.inf
    shares = []
    for index, (at, weight) in enumerate(changes):
        began = starts[index]
        if applied is not None:  # until the Gateway showed anything else
            following = [t for t, _ in applied if began is not None and t > began]
        else:
            following = [t for t in starts[index + 1 :] if t is not None]
        until = following[0] if following else stop
        window = [] if began is None else [s for s in ordered if began + settle <= s.sent < until]
        answered = [s for s in window if s.pod is not None]
        known = began is not None and applied is not None and at >= watched_from
        shares.append(
            StepShare(
                weight=weight,
                lag=max(0.0, began - at) if known and began is not None else None,
                seconds=0.0 if began is None else max(0.0, until - began - settle),
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
    """The table printed for every run: weight set, when the Gateway used it, share measured, tolerance."""
    header = ("weight", "applied", "measured", "requests", "canary", "tolerance", "no pod")
    lines = [title, "  " + "  ".join(f"{h:>9}" for h in header)]
    for step in shares:
        applied = (
            "never"
            if step.lag is None and step.seconds == 0
            else ""
            if step.lag is None
            else f"+{step.lag:.1f}s"
        )
        cells = (
            f"{step.weight}%", applied, f"{step.share:.1f}%", str(step.requests), str(step.canary),
            f"±{step.tolerance:.1f}", str(step.unanswered),
        )  # fmt: skip
        lines.append("  " + "  ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)
