"""The load tester's HTTP service: the webhook endpoint, /jobs, /healthz and /metrics.

``POST /`` takes a ``webhooks.canaryd.io/v1`` payload and answers in JSON:

- ``rollout`` and ``pre-rollout``: start the load its metadata asks for, or
  extend the same running load; 200 ``{"accepted": true, "job": ...}``, or
  after the load when the metadata says ``wait: "true"``;
- ``post-rollout`` and ``rollback``: stop the Canary's load; 200;
- ``event``: nothing to do; 200;
- ``confirm-*``: refused (400); the load tester is no gate, and a gate
  pointed at it by mistake must hold, not open.

Refusals say why in ``reason`` (a CamelCase word) and ``message`` (a
sentence): 400 for a payload that is not one, 401 for a missing, wrong or
stale signature when a key is configured, 403 for a target the policy
refuses, 422 for load beyond the limits or options that cannot be honoured,
429 when the most jobs are already running. Every refusal is a non-2xx, so
the controller counts a failed check and the person sees the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from canaryd.api.timestamps import parse_rfc3339
from canaryd.core.signing import SIGNATURE_HEADER, is_fresh, verify
from canaryd.core.webhooks import WEBHOOK_API_VERSION, HookType
from canaryd.loadtest.jobs import JobManager, TooManyJobs
from canaryd.loadtest.metrics import LoadTestMetrics
from canaryd.loadtest.settings import LoadTestSettings, parse_address
from canaryd.loadtest.spec import SpecRefused, load_spec
from canaryd.loadtest.targets import (
    Resolver,
    TargetRefused,
    check_allowed,
    resolve_target,
    static_resolver,
    system_resolver,
)

log = structlog.get_logger("canaryd.loadtest")

MAX_BODY_BYTES = 256 * 1024
START_HOOKS = frozenset({HookType.ROLLOUT, HookType.PRE_ROLLOUT})
STOP_HOOKS = frozenset({HookType.POST_ROLLOUT, HookType.ROLLBACK})
POLICY_REASONS = frozenset(
    {
        "NamespaceNotAllowed",
        "CrossNamespace",
        "IPLiteral",
        "NotAServiceName",
        "DoesNotResolve",
        "AddressNotAllowed",
        "UnsupportedScheme",
        "CredentialsInURL",
        "InvalidURL",
    }
)


def _answer(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


def _refusal(status: int, reason: str, message: str) -> web.Response:
    return _answer(status, accepted=False, reason=reason, message=message)


class LoadTester:
    def __init__(
        self,
        settings: LoadTestSettings,
        *,
        metrics: LoadTestMetrics | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or LoadTestMetrics()
        self.limits = settings.limits()
        self.allowed = frozenset(settings.namespaces)
        test_hosts = settings.test_host_map()
        self._loopback_allowed = bool(test_hosts)
        self._resolver = resolver or (static_resolver(test_hosts) if test_hosts else system_resolver)
        self._key = (
            Path(settings.webhook_secret_file).read_bytes().strip() if settings.webhook_secret_file else None
        )
        if settings.webhook_secret_file and not self._key:
            raise ValueError(f"the webhook secret file {settings.webhook_secret_file} is empty")
        self.jobs = JobManager(self.metrics, max_jobs=settings.max_jobs)
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/", self._webhook)
        app.router.add_post("/webhook", self._webhook)
        app.router.add_get("/jobs", self._jobs)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _jobs(self, request: web.Request) -> web.Response:
        return _answer(200, jobs=self.jobs.describe())

    def _count(self, hook: str, result: str) -> None:
        self.metrics.webhooks.labels(hook or "unknown", result).inc()

    async def _webhook(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count("", "TooLarge")
            return _refusal(413, "TooLarge", f"a webhook payload is at most {MAX_BODY_BYTES} bytes")
        if self._key is not None and not verify(body, self._key, request.headers.get(SIGNATURE_HEADER)):
            self._count("", "BadSignature")
            return _refusal(
                401, "BadSignature", f"the call has no valid {SIGNATURE_HEADER} for this load tester's key"
            )
        try:
            payload = json.loads(body)
        except ValueError:
            self._count("", "NotJSON")
            return _refusal(400, "NotJSON", "the body is not JSON")
        problem = _payload_problem(payload)
        if problem is not None:
            self._count(str(payload.get("type", "")) if isinstance(payload, dict) else "", "InvalidPayload")
            return _refusal(400, "InvalidPayload", problem)
        hook = HookType(payload["type"])
        if self._key is not None:
            stamp = parse_rfc3339(payload["timestamp"]) if isinstance(payload.get("timestamp"), str) else None
            if not is_fresh(stamp, datetime.now(UTC), self.settings.signature_tolerance_seconds):
                self._count(hook.value, "Stale")
                return _refusal(
                    401,
                    "Stale",
                    "the call's timestamp is too far from this load tester's clock "
                    "(a replayed or delayed call)",
                )
        namespace, name = payload["namespace"], payload["name"]
        if hook in STOP_HOOKS:
            stopped = self.jobs.stop(namespace, name)
            self._count(hook.value, "stopped")
            return _answer(
                200,
                accepted=True,
                stopped=[job.id for job in stopped],
                message=f"stopped {len(stopped)} load job(s) of {namespace}/{name}",
            )
        if hook is HookType.EVENT:
            self._count(hook.value, "ignored")
            return _answer(200, accepted=True, message="events need no load")
        if hook not in START_HOOKS:
            self._count(hook.value, "NotAGate")
            return _refusal(
                400, "NotAGate", f"the load tester does not answer {hook.value} hooks; it is not a gate"
            )
        return await self._start(hook, payload)

    async def _start(self, hook: HookType, payload: dict[str, Any]) -> web.Response:
        namespace, name = payload["namespace"], payload["name"]
        try:
            spec = load_spec(payload, self.limits)
            check_allowed(
                spec.target,
                allowed_namespaces=self.allowed,
                canary_namespace=namespace,
                cross_namespace=self.settings.allow_cross_namespace,
            )
            addresses = await resolve_target(
                spec.target, self._resolver, loopback_allowed=self._loopback_allowed
            )
        except (SpecRefused, TargetRefused) as exc:
            status = 403 if exc.reason in POLICY_REASONS else 422
            self._count(hook.value, exc.reason)
            log.info("load refused", canary=f"{namespace}/{name}", reason=exc.reason, message=exc.message)
            return _refusal(status, exc.reason, exc.message)
        try:
            job, created = self.jobs.start_or_extend(namespace, name, spec, addresses)
        except TooManyJobs as exc:
            self._count(hook.value, "TooManyJobs")
            return _refusal(429, "TooManyJobs", str(exc))
        self._count(hook.value, "started" if created else "extended")
        verb = "sending" if created else "still sending"
        message = f"{verb} {spec.describe()}" + "".join(f"; {note}" for note in spec.notes)
        if spec.wait:
            await job.done.wait()
            message = f"sent {job.stats.sent} requests to {spec.target.label}, {job.stats.errors} failed"
        return _answer(
            200, accepted=True, created=created, job=job.describe(self.jobs.now()), message=message
        )

    async def start(self) -> tuple[str, int]:
        host, port = parse_address(self.settings.address)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[:2] if sockets else (host, port)
        self.bound = (str(bound[0]), int(bound[1]))
        if not self.allowed:
            log.warning("no namespace is allowed: every load request will be refused (set --namespaces)")
        log.info(
            "load tester serving",
            address=f"{self.bound[0]}:{self.bound[1]}",
            namespaces=sorted(self.allowed),
            signed=self._key is not None,
        )
        return self.bound

    async def stop(self) -> None:
        await self.jobs.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _payload_problem(payload: Any) -> str | None:
    """What makes ``payload`` unusable as a webhook payload, or None."""
    if not isinstance(payload, dict):
        return "the body is not a JSON object"
    version = payload.get("apiVersion")
    if version != WEBHOOK_API_VERSION:
        return f"apiVersion {version!r} is not {WEBHOOK_API_VERSION!r}"
    for key in ("namespace", "name"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            return f"{key} must be a non-empty string"
    try:
        HookType(str(payload.get("type")))
    except ValueError:
        return f"type {payload.get('type')!r} is not a webhook type"
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "metadata must be an object of strings"
    return None


async def serve_until_signalled(settings: LoadTestSettings) -> int:
    tester = LoadTester(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await tester.start()
    try:
        await stop.wait()
    finally:
        log.info("load tester stopping")
        await tester.stop()
    return 0
