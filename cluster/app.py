"""The pods' application: one process that answers, on every Ready pod's IP, HTTP and gRPC requests.

Why this module exists: kwok makes pods Running and Ready with an IP, but no container runs, so a
Gateway routing to a pod IP would meet a closed port. This process plays every pod's container: it
watches the cluster's pods, and for each Ready pod whose IP lies in the pod network
(:mod:`cluster.podnet`) it listens on that IP at each container port, inside the network namespace.
How a pod behaves comes from its annotations, which it has from its Deployment's pod template, with
the sandbox's knob names (:mod:`canaryd.sandbox.sim.knobs`): ``sandbox.canaryd.io/error-rate`` (share
of requests answered 500, or UNAVAILABLE for gRPC) and ``sandbox.canaryd.io/latency-ms`` (mean
latency; log-normal, sigma 0.25, as the sandbox's simulator). Errors are spread exactly (a running
debt, not random draws), so a share is what the annotation says.

Design: one host-side process that enters the namespace only to create listening sockets (setns on
the calling thread around ``socket()``; a socket stays in the namespace it was made in, and so do the
connections it accepts). So the same process can watch the API server on the host's 127.0.0.1, which
a process living inside the namespace could not reach (its 127.0.0.1 is its own), and serve its
metrics on the host's loopback, with no control channel between two processes to keep in step.

A pod that is deleted (or being deleted) still answers for ``--drain-seconds`` (5 s), as a container
does in its termination grace period: kwok removes pods at once, while a Gateway learns of the new
endpoints a moment later, and without it every rollout would cost the requests of that moment.

Each port speaks HTTP/1.1 and gRPC (h2c) at once, as many real servers do: a connection whose first
bytes are the HTTP/2 preface is handed to that pod's own grpcio server (started on first use, on a
unix socket), anything else is read as HTTP/1.1. Every answer names the pod (header
``x-canaryd-pod: <namespace>/<name>``; gRPC initial metadata of the same name), which is how a load
generator tells the canary's share of real requests.

Metrics (host loopback, ``/metrics``), labelled with the pod as Prometheus' Kubernetes discovery
would: ``http_requests_total{namespace, pod, code, method, protocol}`` and
``http_request_duration_seconds{namespace, pod, protocol}`` (the sandbox's buckets). A gRPC failure
is counted with code 503, the HTTP status that matches UNAVAILABLE.

Run as ``python -m cluster.app --kubeconfig FILE --pod-cidr CIDR --node-cidr CIDR... --metrics-port
PORT --grpc-dir DIR`` (``cluster.dataplane`` does); it writes ``ready`` to stdout once the first list
of pods is served.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from canaryd.sandbox.sim.knobs import ANNOTATION_ERROR_RATE, ANNOTATION_LATENCY_MS
from canaryd.sandbox.sim.traffic import DEFAULT_LATENCY_MS, DURATION_BUCKETS, LATENCY_MULTIPLIERS
from cluster.podnet import PodNetwork

log = logging.getLogger("cluster.app")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
POD_HEADER = "x-canaryd-pod"
MAX_HEADER_BYTES = 64 * 1024


def _knob(annotations: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    try:
        value = float(annotations[key])
    except (KeyError, TypeError, ValueError):
        return default
    if value != value:  # NaN
        return default
    return min(max(value, low), high)


@dataclass
class Pod:
    """What the app needs of a pod: who it is and how it behaves. Mutable: a pod's knobs may change."""

    namespace: str
    name: str
    uid: str
    error_rate: float = 0.0
    latency_ms: float = DEFAULT_LATENCY_MS
    error_debt: float = 0.0
    sample: int = 0

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def next_outcome(self) -> tuple[bool, float]:
        """(fail?, latency in seconds) of the next request: exact error share, cycling latency quantiles."""
        self.error_debt += self.error_rate
        fail = self.error_debt >= 1.0 - 1e-9
        if fail:
            self.error_debt -= 1.0
        multiplier = LATENCY_MULTIPLIERS[self.sample % len(LATENCY_MULTIPLIERS)]
        self.sample += 1
        return fail, self.latency_ms * multiplier / 1000.0


def pod_from_object(obj: dict[str, Any]) -> Pod:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        error_rate=_knob(annotations, ANNOTATION_ERROR_RATE, 0.0, 0.0, 1.0),
        latency_ms=_knob(annotations, ANNOTATION_LATENCY_MS, DEFAULT_LATENCY_MS, 0.0, 60_000.0),
    )


def serving_keys(obj: dict[str, Any], networks: list[ipaddress.IPv4Network]) -> list[tuple[str, int]]:
    """(pod IP, port) pairs a pod must be served on: Ready, not being deleted, IP in the pod network."""
    status = obj.get("status") or {}
    ip = status.get("podIP")
    if not ip or (obj.get("metadata") or {}).get("deletionTimestamp"):
        return []
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if not ready or not any(ipaddress.ip_address(ip) in net for net in networks):
        return []
    ports = set()
    for container in (obj.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("protocol", "TCP") == "TCP" and port.get("containerPort"):
                ports.add(int(port["containerPort"]))
    return [(ip, port) for port in sorted(ports)]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "Requests the pod answered.", ["namespace", "pod", "code", "method", "protocol"],
            registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "http_request_duration_seconds", "Time the pod took to answer.", ["namespace", "pod", "protocol"],
            buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe(self, pod: Pod, code: int, method: str, protocol: str, seconds: float) -> None:
        self.requests.labels(pod.namespace, pod.name, str(code), method, protocol).inc()
        self.duration.labels(pod.namespace, pod.name, protocol).observe(seconds)


class _Prefixed:
    """A StreamReader with bytes already read put back in front (what the protocol sniffing took)."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader) -> None:
        self.buffer = bytearray(prefix)
        self.reader = reader

    async def _fill(self) -> None:
        chunk = await self.reader.read(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    async def read_until(self, separator: bytes) -> bytes:
        while (index := self.buffer.find(separator)) < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise ValueError("request head too large")
            await self._fill()
        end = index + len(separator)
        out = bytes(self.buffer[:end])
        del self.buffer[:end]
        return out

    async def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._fill()
        out = bytes(self.buffer[:count])
        del self.buffer[:count]
        return out


class PodListener:
    """One pod IP and port: an asyncio server on a socket inside the namespace."""

    def __init__(self, app: PodApp, pod: Pod, ip: str, port: int) -> None:
        self.app, self.pod, self.ip, self.port = app, pod, ip, port
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()
        self.grpc_server: grpc.aio.Server | None = None
        self.grpc_socket: Path | None = None
        self.draining_until: float | None = None  # loop time: the pod is gone, its port still answers

    async def start(self) -> None:
        sock = self.app.network.listen(self.ip, self.port)
        self.server = await asyncio.start_server(self._connection, sock=sock)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.connections):
            writer.close()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=0)
            self.grpc_server = None
        if self.grpc_socket is not None:
            self.grpc_socket.unlink(missing_ok=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            head = b""
            while len(head) < len(H2_PREFACE) and H2_PREFACE.startswith(head):
                chunk = await reader.read(len(H2_PREFACE) - len(head))
                if not chunk:
                    return
                head += chunk
            if head == H2_PREFACE:
                await self._splice_to_grpc(head, reader, writer)
            else:
                await self._serve_http(_Prefixed(head, reader), writer)
        except (EOFError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- HTTP/1.1 ------------------------------------------------------------------------------------------

    async def _serve_http(self, reader: _Prefixed, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.read_until(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                raise ValueError("bad request line")
            method, version = parts[0], parts[2]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                await self._reply(writer, 411, "chunked request bodies are not supported\n", close=True)
                return
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.read_exactly(length)
            started = asyncio.get_running_loop().time()
            pod = self.pod
            fail, latency = pod.next_outcome()
            await asyncio.sleep(latency)
            code = 500 if fail else 200
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            await self._reply(writer, code, f"{'error' if fail else 'ok'} from {pod.label}\n", close=close)
            self.app.metrics.observe(pod, code, method, "http", asyncio.get_running_loop().time() - started)
            if close:
                return

    async def _reply(self, writer: asyncio.StreamWriter, code: int, body: str, close: bool) -> None:
        reason = {200: "OK", 411: "Length Required", 500: "Internal Server Error"}[code]
        data = body.encode()
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
            f"{POD_HEADER}: {self.pod.label}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()

    # -- gRPC ----------------------------------------------------------------------------------------------

    async def _grpc_target(self) -> str:
        if self.grpc_server is None:
            self.grpc_socket = self.app.grpc_dir / f"{self.ip}_{self.port}.sock"
            self.grpc_socket.unlink(missing_ok=True)
            server = grpc.aio.server()
            server.add_generic_rpc_handlers([_AnyMethod(self)])
            server.add_insecure_port(f"unix:{self.grpc_socket}")
            await server.start()
            self.grpc_server = server
        assert self.grpc_socket is not None
        return str(self.grpc_socket)

    async def _splice_to_grpc(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(await self._grpc_target())
        upstream_writer.write(head)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def answer_grpc(self, request: bytes, context: grpc.aio.ServicerContext, method: str) -> bytes:
        started = asyncio.get_running_loop().time()
        pod = self.pod
        fail, latency = pod.next_outcome()
        await asyncio.sleep(latency)
        await context.send_initial_metadata(((POD_HEADER, pod.label),))
        self.app.metrics.observe(
            pod, 503 if fail else 200, method, "grpc", asyncio.get_running_loop().time() - started
        )
        if fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"error from {pod.label}")
        return f"ok from {pod.label}".encode()


class _AnyMethod(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers every unary method with raw bytes (no generated code: the test client sends raw bytes)."""

    def __init__(self, listener: PodListener) -> None:
        self.listener = listener

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self.listener.answer_grpc(request, context, method)

        return grpc.unary_unary_rpc_method_handler(handle)


# ---------------------------------------------------------------------------------------------------------
# Watching pods


def _read_kubeconfig(path: Path) -> tuple[str, str, ssl.SSLContext]:
    config = json.loads(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    return cluster["server"], token, context


@dataclass
class PodApp:
    network: PodNetwork
    kubeconfig: Path
    grpc_dir: Path
    drain_seconds: float = 5.0
    metrics: Metrics = field(default_factory=Metrics)
    listeners: dict[tuple[str, int], PodListener] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> pod object

    def __post_init__(self) -> None:
        self.networks = [ipaddress.IPv4Network(cidr) for cidr in self.network.node_cidrs]

    async def reconcile(self) -> None:
        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        for obj in self.pods.values():
            for key in serving_keys(obj, self.networks):
                wanted[key] = obj
        now = asyncio.get_running_loop().time()
        for key, leaving in list(self.listeners.items()):
            if key in wanted:
                continue
            # Like a container in its termination grace period, the pod answers a while after it is
            # gone, so that requests a Gateway sends before it has the new endpoints still land.
            if leaving.draining_until is None:
                leaving.draining_until = now + self.drain_seconds
                log.info("draining %s on %s:%s for %g s", leaving.pod.label, *key, self.drain_seconds)
            if now >= leaving.draining_until:
                await self.listeners.pop(key).stop()
                log.info("stopped %s on %s:%s", leaving.pod.label, *key)
        for key, obj in wanted.items():
            pod = pod_from_object(obj)
            listener = self.listeners.get(key)
            if listener is not None and listener.pod.uid != pod.uid:  # the IP went to another pod at once
                await self.listeners.pop(key).stop()
                listener = None
            if listener is None:
                listener = PodListener(self, pod, *key)
                try:
                    await listener.start()
                except OSError as error:
                    log.warning("cannot listen on %s:%s for %s: %s", key[0], key[1], pod.label, error)
                    continue
                self.listeners[key] = listener
                log.info("serving %s on %s:%s", pod.label, *key)
            else:
                listener.pod.error_rate, listener.pod.latency_ms = pod.error_rate, pod.latency_ms
                listener.draining_until = None

    async def reap(self) -> None:
        """Stop the listeners whose drain time is over (reconcile only runs when a pod changes)."""
        while True:
            await asyncio.sleep(0.5)
            if any(listener.draining_until is not None for listener in self.listeners.values()):
                await self.reconcile()

    async def watch(self, ready: Callable[[], None]) -> None:
        server, token, context = _read_kubeconfig(self.kubeconfig)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=90)
        announced = False
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            while True:
                try:
                    async with session.get(f"{server}/api/v1/pods", ssl=context) as response:
                        response.raise_for_status()
                        listing = await response.json()
                    self.pods = {item["metadata"]["uid"]: item for item in listing.get("items") or []}
                    await self.reconcile()
                    if not announced:
                        ready()
                        announced = True
                    version = listing["metadata"]["resourceVersion"]
                    await self._follow(session, server, context, version)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
                    log.info("pod watch interrupted (%s); listing again", error)
                    await asyncio.sleep(0.5)

    async def _follow(
        self, session: aiohttp.ClientSession, server: str, context: ssl.SSLContext, version: str
    ) -> None:
        query = f"watch=1&allowWatchBookmarks=true&timeoutSeconds=60&resourceVersion={version}"
        url = f"{server}/api/v1/pods?{query}"
        async with session.get(url, ssl=context) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return  # 410 Gone and friends: list again
                if kind == "BOOKMARK":
                    continue
                uid = (obj.get("metadata") or {}).get("uid")
                if not uid:
                    continue
                if kind == "DELETED":
                    self.pods.pop(uid, None)
                else:
                    self.pods[uid] = obj
                await self.reconcile()

    async def serve_metrics(self, port: int) -> web.AppRunner:
        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        async def healthz(_request: web.Request) -> web.Response:
            return web.Response(text=f"ok: {len(self.listeners)} pod ports served\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    async def close(self) -> None:
        for listener in list(self.listeners.values()):
            await listener.stop()
        self.listeners.clear()


async def _main(args: argparse.Namespace) -> int:
    network = PodNetwork(args.pod_cidr, args.node_cidr)
    if not network.exists():
        print(f"pod app: network namespace {network.netns} does not exist", file=sys.stderr)
        return 2
    grpc_dir = Path(args.grpc_dir or tempfile.mkdtemp(prefix="canaryd-podapp-"))
    grpc_dir.mkdir(parents=True, exist_ok=True)
    app = PodApp(network, Path(args.kubeconfig), grpc_dir, drain_seconds=args.drain_seconds)
    try:
        runner = await app.serve_metrics(args.metrics_port)
    except OSError as error:
        print(f"pod app: metrics port 127.0.0.1:{args.metrics_port} is unusable: {error}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready() -> None:
        print("ready", flush=True)

    watcher = asyncio.create_task(app.watch(ready))
    reaper = asyncio.create_task(app.reap())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
    watcher.cancel()
    reaper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    with contextlib.suppress(asyncio.CancelledError):
        await reaper
    await app.close()
    await runner.cleanup()
    if watcher in done and not watcher.cancelled() and watcher.exception() is not None:
        raise watcher.exception()  # type: ignore[misc]
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.app", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--pod-cidr", required=True)
    parser.add_argument("--node-cidr", action="append", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--grpc-dir")
    parser.add_argument(
        "--drain-seconds", type=float, default=5.0, help="how long a deleted pod still answers (grace period)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PodApp", "main", "pod_from_object", "serving_keys"]
