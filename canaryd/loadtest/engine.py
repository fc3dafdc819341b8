"""Sending the load: workers bounded in number, paced by a token bucket, to pinned addresses only.

One job runs ``concurrency`` workers. Each reserves a token from the job's
bucket (refilled at ``rps``, burst 1) and waits its turn, sends one request
and waits for its whole answer. So at most ``concurrency`` requests are in
flight, and the n-th request of a job never starts before n/``rps`` seconds
after the job began: a worker woken late by a busy event loop lets the next
ones catch up with the schedule, never get ahead of it. A job runs until its deadline, which a later call of
the same webhook may push back (a Canary's next step extends the load rather
than doubling it).

HTTP goes through aiohttp with a resolver that knows only the job's Service
name and the addresses checked for it (:mod:`canaryd.loadtest.targets`), so
no connection can go anywhere else. gRPC goes through grpcio: the channel is
opened to those addresses directly, with the Service name as ``:authority``,
and sends the request message as raw bytes, so any unary method can be called
without its proto.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from canaryd.core.pacing import TokenBucket
from canaryd.loadtest.metrics import LoadTestMetrics
from canaryd.loadtest.spec import LoadSpec

#: At most this much of each answer is read (and then dropped): enough to be a real client, no more.
MAX_ANSWER_BYTES = 1024 * 1024
USER_AGENT = "canaryd-loadtest/1"

#: One request: (code, error reason or None).
SendOne = Callable[[], Awaitable[tuple[str, str | None]]]


class PinnedResolver(AbstractResolver):
    """Resolves exactly one host name to the addresses it was pinned to, and refuses every other name."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        self._host = host.lower().rstrip(".")
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower().rstrip(".") != self._host:
            raise OSError(f"the load tester does not connect to {host}")
        results: list[ResolveResult] = []
        for address in self._addresses:
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            results.append(
                ResolveResult(
                    hostname=host, host=address, port=port, family=fam, proto=0, flags=socket.AI_NUMERICHOST
                )
            )
        return results

    async def close(self) -> None:
        return None


@dataclass
class LoadStats:
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    sent: int = 0
    answered: int = 0
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    latency_total: float = 0.0

    def summary(self) -> dict[str, Any]:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        seconds = max(end - self.started_at, 1e-9)
        return {
            "sent": self.sent,
            "errors": self.errors,
            "codes": dict(sorted(self.codes.items())),
            "errorReasons": dict(sorted(self.reasons.items())),
            "seconds": round(seconds, 3),
            "requestsPerSecond": round(self.sent / seconds, 2),
            "maxInFlight": self.max_in_flight,
            "meanLatencySeconds": round(self.latency_total / self.answered, 6) if self.answered else None,
        }


class Pacer:
    """A token bucket that makes callers wait their turn (one token per request)."""

    def __init__(self, rps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = TokenBucket(rate=rps, burst=1)
        self._clock = clock

    async def wait(self) -> None:
        delay = self._bucket.reserve(self._clock())
        if delay > 0:
            await asyncio.sleep(delay)


async def run_workers(
    concurrency: int,
    pacer: Pacer,
    send_one: SendOne,
    *,
    deadline: Callable[[], float],
    stats: LoadStats,
    record: Callable[[str, str | None, float], None],
    stopping: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``concurrency`` workers until ``deadline()`` (read each time: it may move) or ``stopping``."""

    async def worker() -> None:
        while not stopping.is_set() and clock() < deadline():
            await pacer.wait()
            if stopping.is_set() or clock() >= deadline():
                return
            stats.sent += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            started = clock()
            try:
                code, error = await send_one()
            finally:
                stats.in_flight -= 1
            seconds = clock() - started
            stats.codes[code] = stats.codes.get(code, 0) + 1
            if code != "none":
                stats.answered += 1
                stats.latency_total += seconds
            if error is not None:
                stats.errors += 1
                stats.reasons[error] = stats.reasons.get(error, 0) + 1
            record(code, error, seconds)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class HttpLoad:
    """Sends one job's HTTP requests over a session pinned to the job's addresses."""

    def __init__(self, spec: LoadSpec, addresses: list[str]) -> None:
        self.spec = spec
        connector = aiohttp.TCPConnector(
            limit=spec.concurrency,
            resolver=PinnedResolver(spec.target.host, addresses),
            ttl_dns_cache=None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=spec.timeout),
            auto_decompress=True,
        )
        scheme = "https" if spec.target.scheme == "https" else "http"
        self._url = f"{scheme}://{spec.target.host}:{spec.target.port}{spec.target.path}"
        self._headers = dict(spec.headers)

    async def send_one(self) -> tuple[str, str | None]:
        try:
            async with self._session.request(
                self.spec.method,
                self._url,
                data=self.spec.body or None,
                headers=self._headers,
                allow_redirects=False,
            ) as response:
                await response.content.read(MAX_ANSWER_BYTES)
                status = response.status
        except TimeoutError:
            return "none", "timeout"
        except aiohttp.ServerDisconnectedError:
            return "none", "disconnected"
        except (aiohttp.ClientConnectorError, OSError):
            return "none", "connect"
        except aiohttp.ClientError:
            return "none", "bad-answer"
        return str(status), ("http-5xx" if status >= 500 else None)

    async def close(self) -> None:
        await self._session.close()


class GrpcLoad:
    """Sends one job's unary gRPC calls on a channel opened to the job's addresses."""

    def __init__(self, spec: LoadSpec, addresses: list[str]) -> None:
        import grpc
        import grpc.aio

        self._grpc = grpc
        self.spec = spec
        port = spec.target.port
        ipv4 = [a for a in addresses if ":" not in a]
        if ipv4:
            target = "ipv4:" + ",".join(f"{a}:{port}" for a in ipv4)
        else:
            target = "ipv6:" + ",".join(f"[{a}]:{port}" for a in addresses)
        options: list[tuple[str, Any]] = [
            ("grpc.default_authority", f"{spec.target.host}:{port}"),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.primary_user_agent", USER_AGENT),
            ("grpc.enable_retries", 0),
        ]
        if spec.target.scheme == "grpcs":
            options.append(("grpc.ssl_target_name_override", spec.target.host))
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._call = self._channel.unary_unary(
            spec.method, request_serializer=None, response_deserializer=None
        )
        self._metadata = tuple((k.lower(), v) for k, v in spec.headers)

    async def send_one(self) -> tuple[str, str | None]:
        grpc = self._grpc
        try:
            await self._call(self.spec.body, timeout=self.spec.timeout, metadata=self._metadata or None)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return code.name, "timeout"
            return code.name, code.name.lower()
        return "OK", None

    async def close(self) -> None:
        await self._channel.close()


def sender_for(spec: LoadSpec, addresses: list[str]) -> HttpLoad | GrpcLoad:
    return GrpcLoad(spec, addresses) if spec.protocol == "grpc" else HttpLoad(spec, addresses)


def recorder(metrics: LoadTestMetrics, spec: LoadSpec) -> Callable[[str, str | None, float], None]:
    """A callback that counts one request in the load tester's metrics (label children cached per code)."""
    namespace, target = spec.target.namespace, spec.target.label
    latency = metrics.latency.labels(namespace, target)
    by_code: dict[str, Any] = {}
    by_reason: dict[str, Any] = {}

    def record(code: str, error: str | None, seconds: float) -> None:
        counter = by_code.get(code)
        if counter is None:
            counter = by_code[code] = metrics.requests.labels(namespace, target, code)
        counter.inc()
        if error is not None:
            failed = by_reason.get(error)
            if failed is None:
                failed = by_reason[error] = metrics.errors.labels(namespace, target, error)
            failed.inc()
        if code != "none":
            latency.observe(seconds)

    return record
