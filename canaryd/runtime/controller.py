"""The controller process: caches, workers, wake-ups, leader election and endpoints, wired together.

``Controller(settings)`` is the whole of ``canaryd run``, startable in-process
(tests, the demo) or from the command line. Its life:

1. connect to the API server and start the list+watch caches;
2. serve /healthz, /readyz and /metrics;
3. with leader election, campaign for the Lease; without, lead at once. Only
   the leader runs workers and wake-ups; a standby keeps its caches warm so it
   can take over in the time it takes to win the Lease. With ``--shards N``
   the Canaries are split into N shards by a stable hash of namespace/name,
   each held through its own Lease (``adapters.shards``): a replica works the
   Canaries of the shards it holds, and takes a dead replica's shards when
   their Leases expire, resuming each run from its status;
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

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.adapters.informer import Key, MultiInformer
from canaryd.adapters.kube import (
    AUTOSCALERS,
    CANARIES,
    DEPLOYMENTS,
    GATEWAY_CLASSES,
    GATEWAYS,
    GRPC_ROUTES,
    HTTP_ROUTES,
    METRIC_TEMPLATES,
    SERVICES,
    KubeClient,
)
from canaryd.adapters.leader import LeaderElector
from canaryd.adapters.scheduler import WakeupScheduler
from canaryd.adapters.shards import ShardElector
from canaryd.adapters.writers import Writer
from canaryd.core import gateway_support, lifecycle
from canaryd.core.references import Reference, references
from canaryd.core.sharding import shard_of
from canaryd.runtime.hooks import BackgroundHooks, HookRunner
from canaryd.runtime.http import Endpoints
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.notify import ChatNotifications, parse_secret_name
from canaryd.runtime.observe import Caches, RunSlots
from canaryd.runtime.reconciler import Analyzer, DecideFn, DueFn, Reconciler, ShareMeter
from canaryd.runtime.secrets import SecretReader
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
        #: Webhook calls and chat notifications, counted on the controller's own /metrics.
        self.delivery_metrics = DeliveryMetrics(self.metrics.registry)
        self.hooks: HookRunner | None = None
        self.background: BackgroundHooks | None = None
        self.notifications: ChatNotifications | None = None
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
        self.shard_elector: ShardElector | None = None
        #: With sharding: the shards this replica holds.
        self.owned_shards: set[int] = set()
        self.reconciler: Reconciler | None = None
        self._index: dict[Reference, set[Key]] = defaultdict(set)
        self._refs_of: dict[Key, set[Reference]] = {}
        #: What the Gateway and GatewayClass caches last showed (a change wakes the Canaries that mirror).
        self._gateway_class_of: dict[Key, str] = {}
        self._class_features: dict[str, frozenset[str] | None] = {}
        self._leading = False
        self._lead_task: asyncio.Task[None] | None = None
        self._closers: list[Any] = []
        self.stopped = asyncio.Event()

    # -- state ------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def owns(self, key: Key) -> bool:
        """Whether this replica works this Canary now (it leads; with sharding, it holds its shard)."""
        if not self._leading:
            return False
        if self.shard_elector is None:
            return True
        return shard_of(key[0], key[1], self.settings.shards) in self.owned_shards

    def _enqueue(self, key: Key) -> None:
        if self.owns(key):
            self.workers.enqueue(key)

    def readiness(self) -> tuple[bool, str]:
        if self.caches is None or not self.caches.synced:
            return False, "caches not synced"
        if self.shard_elector is not None:
            if not self.shard_elector.participating.is_set():
                return False, "shard election not started"
            return True, f"holding {len(self.owned_shards)} of {self.settings.shards} shards"
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
            autoscalers=MultiInformer(self.client, AUTOSCALERS, namespaces, **options),
            # A route's parent Gateway often lives in another namespace than the route: watched everywhere.
            gateways=MultiInformer(self.client, GATEWAYS, None, **options),
            gateway_classes=MultiInformer(self.client, GATEWAY_CLASSES, None, **options),
        )
        slots = RunSlots(settings.max_concurrent_runs)
        self.caches.canaries.add_handler(slots.track)
        self.caches.canaries.add_handler(self.caches.claims.track)
        self.caches.canaries.add_handler(self._on_canary)
        self.caches.templates.add_handler(self._dependency("MetricTemplate"))
        self.caches.deployments.add_handler(self._dependency("Deployment"))
        self.caches.services.add_handler(self._dependency("Service"))
        for kind, cache in self.caches.routes.items():
            cache.add_handler(self._dependency(kind))
        assert self.caches.autoscalers is not None
        self.caches.autoscalers.add_handler(self._on_autoscaler)
        assert self.caches.gateways is not None and self.caches.gateway_classes is not None
        self.caches.gateways.add_handler(self._on_gateway)
        self.caches.gateway_classes.add_handler(self._on_gateway_class)
        secrets = SecretReader(self.client)
        self.hooks = HookRunner(secrets, self.delivery_metrics)
        self.background = BackgroundHooks(self.hooks)
        self.notifications = ChatNotifications(
            secrets,
            self.delivery_metrics,
            cluster_secret=parse_secret_name(
                settings.notification_secret, settings.leader_election_namespace
            ),
            cluster_name=settings.cluster_name,
        )
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
            slots=slots,
            analyzer=analyzer,
            decide=self._decide,
            analysis_due=self._analysis_due,
            requeue=self._enqueue,
            hook_round=self.hooks.run,
            background=self.background,
            notifications=self.notifications,
            share_meter=share_meter,
            share_due=lifecycle.traffic_share_due,
        )
        self.background.on_failure = self.reconciler.report_webhook_failure
        self.notifications.on_problem = self.reconciler.report_notification_problem
        self.notifications.start()
        for cache in self.caches.all:
            cache.start()
        await self.endpoints.start(
            parse_address(settings.health_address), parse_address(settings.metrics_address)
        )
        if settings.shards > 0:
            self.shard_elector = ShardElector(
                self.client,
                namespace=settings.leader_election_namespace,
                group=settings.leader_election_id,
                identity=settings.leader_election_identity,
                shards=settings.shards,
                lease_duration=settings.lease_duration_seconds,
                renew_deadline=settings.renew_deadline_seconds,
                retry_period=settings.retry_period_seconds,
                on_acquired=self._shard_acquired,
                on_lost=self._shard_lost,
            )
            self.shard_elector.start()
        elif settings.leader_elect:
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
            shards=settings.shards,
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
            self._enqueue((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        log.info("leading: looking at every Canary", canaries=sum(1 for _ in self.caches.canaries.items()))

    def _keys_of_shard(self, shard: int) -> list[Key]:
        assert self.caches is not None
        keys = []
        for obj in self.caches.canaries.items():
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
            if shard_of(key[0], key[1], self.settings.shards) == shard:
                keys.append(key)
        return keys

    async def _shard_acquired(self, shard: int) -> None:
        """A shard is ours: start working (once caches sync) and look at each of its Canaries."""
        self.owned_shards.add(shard)
        self.metrics.shards_held.set(len(self.owned_shards))
        if not self._leading:
            await self._start_leading()  # looks at every Canary we own once the caches are synced
        elif self._lead_task is not None and self._lead_task.done():
            for key in self._keys_of_shard(shard):
                self.workers.enqueue(key)

    async def _shard_lost(self, shard: int) -> None:
        """A shard is no longer ours: let decisions under way finish, drop its wake-ups and workers."""
        self.owned_shards.discard(shard)
        self.metrics.shards_held.set(len(self.owned_shards))
        shards = self.settings.shards

        def in_shard(key: Key) -> bool:
            return shard_of(key[0], key[1], shards) == shard

        await self.workers.stop_some(in_shard)
        for key in self._keys_of_shard(shard):
            self.scheduler.cancel(f"{key[0]}/{key[1]}")
        if not self.owned_shards:
            await self._stop_leading()

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
        # The new leader reports every Canary from now on; series kept here would go stale.
        self.metrics.forget_canaries()

    async def stop(self) -> None:
        """Stop acting, give up the Lease, stop watching; safe to call twice."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.shard_elector is not None:
            await self.shard_elector.stop(release=True)
            if self._leading:
                await self._stop_leading()
        elif self.elector is not None:
            was_leader = self.elector.is_leader
            await self.elector.stop(release=False)
            if self._leading:
                await self._stop_leading()
            if was_leader:
                await self.elector.release()
        elif self._leading:
            await self._stop_leading()
        self.scheduler.shutdown()
        if self.background is not None:
            await self.background.stop()
        if self.notifications is not None:
            await self.notifications.stop()
        if self.hooks is not None:
            await self.hooks.close()
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
                asyncio.get_running_loop().create_task(self._discard(key))
            self._wake_refused_peers(key[0])
            return
        refs = references(obj)
        self._refs_of[key] = refs
        for ref in refs:
            self._index[ref].add(key)
        self._enqueue(key)

    async def _discard(self, key: Key) -> None:
        """Stop a deleted Canary's worker, then forget it again: a pass that was under way is over."""
        await self.workers.discard(key)
        if self.reconciler is not None and self.caches is not None and self.caches.canaries.get(*key) is None:
            self.reconciler.forget(key)

    def _wake_refused_peers(self, namespace: str) -> None:
        """A Canary went away: those it kept from their target (``core.claims``) may act now."""
        if self.caches is None:
            return
        for key in sorted(self.caches.claims.refused(namespace)):
            self._enqueue(key)

    def _dependency(self, kind: str) -> Any:
        def handler(event_type: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            for key in self._index.get((kind, str(meta.get("namespace", "")), str(meta.get("name", ""))), ()):
                self._enqueue(key)

        return handler

    def _on_autoscaler(self, event_type: str, obj: dict[str, Any]) -> None:
        """Keep the index of what each HPA scales, and look again at the Canaries of that Deployment."""
        assert self.caches is not None
        for namespace, deployment in self.caches.autoscaler_index.on_event(event_type, obj):
            for key in self._index.get(("Deployment", namespace, deployment), ()):
                self.workers.enqueue(key)

    def _on_gateway(self, event_type: str, obj: dict[str, Any]) -> None:
        """A Gateway came, went or changed class: Canaries that mirror look again at what it supports."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        class_name = None if event_type == "DELETED" else gateway_support.gateway_class_name(obj)
        if self._gateway_class_of.get(key) == class_name:
            return  # a status update: what the Gateway supports did not change
        if class_name is None:
            self._gateway_class_of.pop(key, None)
        else:
            self._gateway_class_of[key] = class_name
        self._wake_mirroring()

    def _on_gateway_class(self, event_type: str, obj: dict[str, Any]) -> None:
        """A GatewayClass's supportedFeatures changed: Canaries that mirror look again."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        features = None if event_type == "DELETED" else gateway_support.listed_features(obj)
        if name in self._class_features and self._class_features[name] == features:
            return
        self._class_features[name] = features
        self._wake_mirroring()

    def _wake_mirroring(self) -> None:
        if self.caches is None:
            return
        for obj in self.caches.canaries.items():
            analysis = (obj.get("spec") or {}).get("analysis") or {}
            if isinstance(analysis, dict) and analysis.get("mirror") is not None:
                meta = obj.get("metadata") or {}
                self._enqueue((str(meta.get("namespace", "")), str(meta.get("name", ""))))

    async def _wake(self, key_text: str, due: datetime) -> None:
        namespace, _, name = key_text.partition("/")
        key = (namespace, name)
        if self.reconciler is not None:
            self.reconciler.woke(key, due)
        self._enqueue(key)

    async def _work(self, key: Key) -> None:
        if self.reconciler is not None and self.owns(key):
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
