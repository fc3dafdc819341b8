"""The controller process: caches, workers, wake-ups, leader election and endpoints, wired together.

``Controller(settings)`` is the whole of ``canaryd run``, startable in-process
(tests, the demo) or from the command line. Its life:

1. connect to the API server and start the list+watch caches;
2. serve /healthz, /readyz and /metrics;
3. with leader election, campaign for the Lease; without, lead at once. Only
   the leader runs workers and wake-ups; a standby keeps its caches warm so it
   can take over in the time it takes to win the Lease;
4. on becoming leader: wait for the caches to sync, then look at every Canary
   once (which schedules each one's next due step from its status);
5. on stop (SIGTERM): stop the workers (letting a decision under way finish
   its writes), release the Lease, stop the caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import structlog

from canaryd.adapters.informer import Key, MultiInformer
from canaryd.adapters.kube import (
    CANARIES,
    DEPLOYMENTS,
    GRPC_ROUTES,
    HTTP_ROUTES,
    METRIC_TEMPLATES,
    SERVICES,
    KubeClient,
)
from canaryd.adapters.leader import LeaderElector
from canaryd.adapters.scheduler import WakeupScheduler
from canaryd.adapters.writers import Writer
from canaryd.core import lifecycle
from canaryd.core.references import Reference, references
from canaryd.runtime.http import Endpoints
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.observe import Caches, RunSlots
from canaryd.runtime.reconciler import Analyzer, DecideFn, DueFn, Reconciler, ShareMeter
from canaryd.runtime.settings import Settings, parse_address
from canaryd.runtime.workers import WorkerPool

log = structlog.get_logger("canaryd.controller")


class Controller:
    def __init__(
        self,
        settings: Settings,
        *,
        analyzer: Analyzer | None = None,
        decide: DecideFn = lifecycle.decide,
        analysis_due: DueFn = lifecycle.analysis_due,
        user_agent: str = "canaryd",
        share_meter: ShareMeter | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ControllerMetrics()
        self._analyzer = analyzer
        self._share_meter = share_meter
        self._decide = decide
        self._analysis_due = analysis_due
        self._user_agent = user_agent
        self.client: KubeClient | None = None
        self.caches: Caches | None = None
        self.workers = WorkerPool(self._work)
        self.scheduler = WakeupScheduler(self._wake)
        self.endpoints = Endpoints(self.metrics.registry, self.readiness)
        self.elector: LeaderElector | None = None
        self.reconciler: Reconciler | None = None
        self._index: dict[Reference, set[Key]] = defaultdict(set)
        self._refs_of: dict[Key, set[Reference]] = {}
        self._leading = False
        self._lead_task: asyncio.Task[None] | None = None
        self._closers: list[Any] = []
        self.stopped = asyncio.Event()

    # -- state ------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def readiness(self) -> tuple[bool, str]:
        if self.caches is None or not self.caches.synced:
            return False, "caches not synced"
        if self.elector is not None:
            if not self.elector.participating.is_set():
                return False, "leader election not started"
            return True, "leader" if self.elector.is_leader else "standby"
        return True, "leader"

    # -- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self.client = await KubeClient.connect(
            settings.kubeconfig,
            context=settings.context,
            qps=settings.qps,
            burst=settings.burst,
            on_request=self.metrics.observe_request,
            user_agent=self._user_agent,
        )
        namespaces = settings.namespaces or None
        template_namespaces = (
            sorted({*settings.namespaces, settings.leader_election_namespace}) if namespaces else None
        )
        options = {"stall_timeout": settings.watch_stall_timeout_seconds}
        self.caches = Caches(
            canaries=MultiInformer(self.client, CANARIES, namespaces, **options),
            templates=MultiInformer(self.client, METRIC_TEMPLATES, template_namespaces, **options),
            deployments=MultiInformer(self.client, DEPLOYMENTS, namespaces, **options),
            services=MultiInformer(self.client, SERVICES, namespaces, **options),
            routes={
                "HTTPRoute": MultiInformer(self.client, HTTP_ROUTES, namespaces, **options),
                "GRPCRoute": MultiInformer(self.client, GRPC_ROUTES, namespaces, **options),
            },
        )
        self.caches.canaries.add_handler(self._on_canary)
        self.caches.templates.add_handler(self._dependency("MetricTemplate"))
        self.caches.deployments.add_handler(self._dependency("Deployment"))
        self.caches.services.add_handler(self._dependency("Service"))
        for kind, cache in self.caches.routes.items():
            cache.add_handler(self._dependency(kind))
        analyzer, share_meter = self._analyzer, self._share_meter
        if analyzer is None or share_meter is None:
            from canaryd.runtime.analysis import PrometheusAnalyzer

            prometheus = PrometheusAnalyzer(settings, self.metrics, self.client)
            self._closers.append(prometheus)
            analyzer = analyzer or prometheus.analyze
            share_meter = share_meter or prometheus.measure_share
        writer = Writer(self.client, self._cache_by_plural(), settings.leader_election_identity)
        self.reconciler = Reconciler(
            caches=self.caches,
            writer=writer,
            scheduler=self.scheduler,
            metrics=self.metrics,
            slots=RunSlots(settings.max_concurrent_runs),
            analyzer=analyzer,
            decide=self._decide,
            analysis_due=self._analysis_due,
            requeue=self.workers.enqueue,
            share_meter=share_meter,
            share_due=lifecycle.traffic_share_due,
        )
        for cache in self.caches.all:
            cache.start()
        await self.endpoints.start(
            parse_address(settings.health_address), parse_address(settings.metrics_address)
        )
        if settings.leader_elect:
            self.elector = LeaderElector(
                self.client,
                namespace=settings.leader_election_namespace,
                name=settings.leader_election_id,
                identity=settings.leader_election_identity,
                lease_duration=settings.lease_duration_seconds,
                renew_deadline=settings.renew_deadline_seconds,
                retry_period=settings.retry_period_seconds,
                on_started_leading=self._start_leading,
                on_stopped_leading=self._stop_leading,
            )
            self.elector.start()
        else:
            await self._start_leading()
        log.info(
            "controller started",
            api_server=self.client.host,
            namespaces=settings.namespaces or "all",
            leader_elect=settings.leader_elect,
            identity=settings.leader_election_identity,
        )

    def _cache_by_plural(self) -> dict[str, MultiInformer]:
        assert self.caches is not None
        return {cache.resource.plural: cache for cache in self.caches.all}

    async def _start_leading(self) -> None:
        assert self.caches is not None
        self.metrics.leader.set(1)
        self._leading = True
        self._lead_task = asyncio.create_task(self._begin_work(), name="begin-work")

    async def _begin_work(self) -> None:
        assert self.caches is not None
        while not self.caches.synced:
            await asyncio.sleep(0.05)
        if not self._leading:
            return
        self.scheduler.start()
        self.workers.start()
        for obj in list(self.caches.canaries.items()):
            meta = obj.get("metadata") or {}
            self.workers.enqueue((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        log.info("leading: looking at every Canary", canaries=sum(1 for _ in self.caches.canaries.items()))

    async def _stop_leading(self) -> None:
        self._leading = False
        self.metrics.leader.set(0)
        if self._lead_task is not None:
            self._lead_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lead_task
            self._lead_task = None
        await self.workers.stop()
        self.scheduler.cancel_all()

    async def stop(self) -> None:
        """Stop acting, give up the Lease, stop watching; safe to call twice."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.elector is not None:
            was_leader = self.elector.is_leader
            await self.elector.stop(release=False)
            if self._leading:
                await self._stop_leading()
            if was_leader:
                await self.elector.release()
        elif self._leading:
            await self._stop_leading()
        self.scheduler.shutdown()
        if self.caches is not None:
            await asyncio.gather(*(cache.stop() for cache in self.caches.all))
        await self.endpoints.stop()
        for closer in self._closers:
            await closer.close()
        if self.client is not None:
            await self.client.close()
        log.info("controller stopped")

    # -- events ---------------------------------------------------------------------------------

    def _on_canary(self, event_type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        for ref in self._refs_of.pop(key, set()):
            self._index[ref].discard(key)
        if event_type == "DELETED":
            if self.reconciler is not None:
                self.reconciler.forget(key)
            if self._leading:
                asyncio.get_running_loop().create_task(self.workers.discard(key))
            return
        refs = references(obj)
        self._refs_of[key] = refs
        for ref in refs:
            self._index[ref].add(key)
        self.workers.enqueue(key)

    def _dependency(self, kind: str) -> Any:
        def handler(event_type: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            for key in self._index.get((kind, str(meta.get("namespace", "")), str(meta.get("name", ""))), ()):
                self.workers.enqueue(key)

        return handler

    async def _wake(self, key_text: str, due: datetime) -> None:
        namespace, _, name = key_text.partition("/")
        key = (namespace, name)
        if self.reconciler is not None:
            self.reconciler.woke(key, due)
        self.workers.enqueue(key)

    async def _work(self, key: Key) -> None:
        if self.reconciler is not None and self._leading:
            await self.reconciler.reconcile(key)


@contextlib.asynccontextmanager
async def running_controller(settings: Settings, **options: Any) -> AsyncIterator[Controller]:
    """A started Controller, stopped on exit (for tests, the demo and benchmarks)."""
    controller = Controller(settings, **options)
    try:
        await controller.start()
        yield controller
    finally:
        await controller.stop()


async def run_until_signalled(settings: Settings) -> int:
    """``canaryd run``: start, then stop gracefully on SIGTERM or SIGINT."""
    controller = Controller(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await controller.start()
        await stop.wait()
        log.info("signal received, shutting down")
    finally:
        await controller.stop()
    return 0
