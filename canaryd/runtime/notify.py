"""Chat notifications from the controller: where each Canary's go, read from Secrets, sent in the background.

A decision's ``Notify`` effect only puts the notification on a bounded
queue and returns. One task reads the queue, finds the Canary's
destinations (its own Secret, ``spec.notifications.secretRef``, else the
controller's ``--notification-secret``; read through the Secret cache, so at
most once a minute each), keeps the kinds the Canary asked for (its own list,
else the Secret's ``kinds``, else all but each step) and hands the message to
the :class:`~canaryd.adapters.notifier.Notifier`, which paces and sends it per
destination. Nothing here can hold up a run: a full queue drops the message
and counts it (``canaryd_notifications_dropped_total``), a missing Secret is
logged, counted and, for a Canary's own Secret, said in a Warning Event once a
minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.adapters.notifier import Notifier, ProviderConfig
from canaryd.adapters.webhook_delivery import WebhookSender
from canaryd.api.constants import NotificationKind
from canaryd.api.models import Canary
from canaryd.core.notifications import Notification, effective_kinds, parse_destinations, wanted
from canaryd.runtime.secrets import SecretProblem, SecretReader

log = structlog.get_logger("canaryd.notify")

#: Notifications waiting to be routed before new ones are dropped.
QUEUE_SIZE = 1000
#: A problem with a Canary's notification Secret is said again at most this often (seconds).
PROBLEM_REPEAT_SECONDS = 60.0

ProblemReport = Callable[[Canary, str], Awaitable[None]]


def parse_secret_name(value: str, default_namespace: str) -> tuple[str, str] | None:
    """``namespace/name`` or ``name`` (in ``default_namespace``); None for an empty setting."""
    value = value.strip()
    if not value:
        return None
    namespace, _, name = value.rpartition("/")
    return (namespace or default_namespace, name)


class ChatNotifications:
    def __init__(
        self,
        secrets: SecretReader,
        metrics: DeliveryMetrics,
        *,
        cluster_secret: tuple[str, str] | None,
        cluster_name: str = "",
        sender: WebhookSender | None = None,
        on_problem: ProblemReport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secrets = secrets
        self.metrics = metrics
        self.cluster_secret = cluster_secret
        self.cluster_name = cluster_name or None
        self.on_problem = on_problem
        self.notifier = Notifier([], sender=sender, metrics=metrics)
        self._queue: asyncio.Queue[tuple[Canary, Notification]] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self._clock = clock
        self._said: dict[tuple[str, str, str], float] = {}

    def start(self) -> None:
        self.notifier.start()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._route(), name="notifications")

    def notify(self, canary: Canary, notification: Notification) -> None:
        """Queue a notification about a Canary; never blocks, drops (and counts) when the queue is full."""
        if self.cluster_name and notification.cluster is None:
            notification = replace(notification, cluster=self.cluster_name)
        try:
            self._queue.put_nowait((canary, notification))
        except asyncio.QueueFull:
            self.metrics.dropped_notification("controller", "queue-full")
            log.warning("notification dropped: queue full", kind=notification.kind.value)

    async def _route(self) -> None:
        while True:
            canary, notification = await self._queue.get()
            try:
                await self._send(canary, notification)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad Secret or message must not end the routing
                log.error("notification not routed", error=str(exc))
            finally:
                self._queue.task_done()

    def _source(self, canary: Canary) -> tuple[tuple[str, str], bool] | None:
        """The Secret a Canary's notifications come from, and whether it is the Canary's own."""
        spec = canary.spec.notifications
        if spec is not None and spec.secret_ref is not None:
            return (canary.metadata.namespace, spec.secret_ref.name), True
        if self.cluster_secret is not None:
            return self.cluster_secret, False
        return None

    async def _send(self, canary: Canary, notification: Notification) -> None:
        spec = canary.spec.notifications
        canary_kinds: list[NotificationKind] | None = spec.kinds if spec is not None else None
        if canary_kinds is not None and notification.kind not in canary_kinds:
            return
        source = self._source(canary)
        if source is None:
            return
        (namespace, name), own = source
        label = f"{namespace}/{name}"
        try:
            data = await self.secrets.data(namespace, name)
        except SecretProblem as exc:
            self.metrics.dropped_notification(label, "secret-unreadable")
            await self._problem(canary, own, f"notifications not sent: {exc}")
            return
        text = {key: value.decode("utf-8", errors="replace") for key, value in data.items()}
        found = parse_destinations(text)
        if found.problems:
            await self._problem(canary, own, f"notification Secret {label}: " + "; ".join(found.problems))
        if not wanted(notification.kind, effective_kinds(canary_kinds, found.kinds)):
            return
        for destination in found.destinations:
            provider = f"{label}/{destination.key}"
            self.notifier.ensure_provider(
                ProviderConfig(
                    name=provider,
                    provider=destination.provider,
                    url=destination.url,
                    kinds=tuple(NotificationKind),
                )
            )
            self.notifier.notify(notification, providers=[provider])

    async def _problem(self, canary: Canary, own: bool, message: str) -> None:
        key = (canary.metadata.namespace, canary.metadata.name, message)
        now = self._clock()
        if now - self._said.get(key, -PROBLEM_REPEAT_SECONDS) < PROBLEM_REPEAT_SECONDS:
            return
        self._said[key] = now
        log.warning(message, namespace=canary.metadata.namespace, name=canary.metadata.name)
        if own and self.on_problem is not None:
            with contextlib.suppress(Exception):
                await self.on_problem(canary, message)

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued notification was routed and sent (for tests and shutdown)."""
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return await self.notifier.flush(timeout)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            self._queue.get_nowait()
            self.metrics.dropped_notification("controller", "shutdown")
        await self.notifier.stop(drain_timeout)
