"""Chat notifications sent in the background, paced per provider, never holding up a rollout.

A rollout must not wait for Slack. ``Notifier.notify`` only formats the
message and puts it on the provider's bounded queue, and returns at once; one
background task per provider drains its queue, paced by a token bucket (chat
webhooks take about one message a second; Teams throttles above 4 a second)
and sent with :class:`~canaryd.adapters.webhook_delivery.WebhookSender`'s
retries. When a queue is full (a provider down for long, or a storm of
events) the new message is dropped and counted, so memory stays bounded and
the loss is visible on /metrics. Providers are independent: a slow one never
delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.adapters.webhook_delivery import DeliveryPolicy, DeliveryResult, WebhookSender
from canaryd.api.constants import NotificationKind
from canaryd.core.notifications import (
    Notification,
    Provider,
    effective_status,
    format_message,
    wanted,
)
from canaryd.core.pacing import TokenBucket
from canaryd.core.redaction import redact_destination
from canaryd.core.webhooks import encode_payload

log = structlog.get_logger("canaryd.notifier")

#: Messages a second and burst each service takes from one webhook without throttling.
DEFAULT_RATES: dict[Provider, tuple[float, int]] = {
    Provider.SLACK: (1.0, 3),
    Provider.TEAMS: (2.0, 4),
    Provider.DISCORD: (1.0, 5),
    Provider.GENERIC: (10.0, 20),
}


#: Chat services are far away and sometimes throttle: more retries, longer backoff than a webhook gate.
NOTIFICATION_POLICY = DeliveryPolicy(timeout=10.0, retries=3, backoff=1.0, backoff_cap=30.0)


@dataclass(frozen=True)
class ProviderConfig:
    """One destination: a name people recognise in metrics, the service's kind and its webhook URL."""

    name: str
    provider: Provider
    url: str
    #: Messages per second and burst; the service's usual limits when None.
    rate: float | None = None
    burst: int | None = None
    #: Kinds of notification this destination gets (None: all but each step).
    kinds: Sequence[NotificationKind] | None = None
    policy: DeliveryPolicy = NOTIFICATION_POLICY
    #: For the generic provider: sign the body like a webhook (X-Canaryd-Signature).
    signing_key: bytes | None = None

    def pacing(self) -> TokenBucket:
        rate, burst = DEFAULT_RATES[self.provider]
        return TokenBucket(rate=self.rate or rate, burst=self.burst or burst)


class _Channel:
    def __init__(self, config: ProviderConfig, queue_size: int) -> None:
        self.config = config
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self.bucket = config.pacing()
        self.task: asyncio.Task[None] | None = None


class Notifier:
    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        *,
        sender: WebhookSender | None = None,
        metrics: DeliveryMetrics | None = None,
        queue_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics or DeliveryMetrics()
        self._sender = sender or WebhookSender(metrics=None)
        self._own_sender = sender is None
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        for config in providers:
            if config.name in self._channels:
                raise ValueError(f"two notification providers are named {config.name!r}")
            self._channels[config.name] = _Channel(config, queue_size)
        #: The last result per provider, for status pages and tests.
        self.last_result: dict[str, DeliveryResult] = {}
        self._stopping = False
        self._started = False
        self._queue_size = queue_size

    @property
    def providers(self) -> list[str]:
        return list(self._channels)

    def start(self) -> None:
        """Start one sending task per provider; call from inside the running event loop."""
        self._started = True
        for name, channel in self._channels.items():
            if channel.task is None or channel.task.done():
                channel.task = asyncio.get_running_loop().create_task(
                    self._drain(channel), name=f"notify-{name}"
                )

    def ensure_provider(self, config: ProviderConfig) -> None:
        """Add a provider (or change its URL and settings) while running; its queue is kept."""
        channel = self._channels.get(config.name)
        if channel is None:
            self._channels[config.name] = _Channel(config, self._queue_size)
            if self._started:
                self.start()
        elif channel.config != config:
            channel.config = config
            channel.bucket = config.pacing()

    def notify(self, notification: Notification, providers: Sequence[str] | None = None) -> int:
        """Queue ``notification`` for each provider that wants it (all, or those named); never blocks.

        Returns how many providers it was queued for; the others' drops are counted.
        """
        queued = 0
        for name, channel in self._channels.items():
            if providers is not None and name not in providers:
                continue
            if not wanted(notification.kind, channel.config.kinds):
                continue
            if self._stopping:
                self.metrics.dropped_notification(name, "shutdown")
                continue
            body = format_message(channel.config.provider, notification)
            try:
                channel.queue.put_nowait(body)
            except asyncio.QueueFull:
                self.metrics.dropped_notification(name, "queue-full")
                log.warning(
                    "notification dropped: queue full",
                    provider=name,
                    kind=notification.kind.value,
                    canary=f"{notification.namespace}/{notification.name}",
                )
                continue
            queued += 1
        return queued

    def pending(self, provider: str) -> int:
        return self._channels[provider].queue.qsize()

    async def _drain(self, channel: _Channel) -> None:
        config = channel.config
        check = partial(effective_status, config.provider)
        while True:
            body = await channel.queue.get()
            try:
                wait = channel.bucket.reserve(self._clock())
                if wait > 0:
                    await asyncio.sleep(wait)
                result = await self._sender.deliver(
                    config.url,
                    encode_payload(body),
                    policy=config.policy,
                    signing_key=config.signing_key,
                    answer_status=check,
                )
                self.last_result[config.name] = result
                self.metrics.observe_notification(config.name, result.outcome.value)
                if not result.ok:
                    log.warning("notification not delivered", provider=config.name, result=result.describe())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a formatting or transport bug must not end the drain loop
                self.metrics.observe_notification(config.name, "error")
                error = redact_destination(str(exc), config.url)
                log.error("notification failed", provider=config.name, error=error)
            finally:
                channel.queue.task_done()

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued message was sent (or failed); False when ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                for channel in self._channels.values():
                    await channel.queue.join()
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what is queued for up to ``drain_timeout`` seconds, then stop; the rest counts as dropped."""
        self._stopping = True
        await self.flush(drain_timeout)
        for name, channel in self._channels.items():
            if channel.task is not None:
                channel.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await channel.task
            while not channel.queue.empty():
                channel.queue.get_nowait()
                self.metrics.dropped_notification(name, "shutdown")
        if self._own_sender:
            await self._sender.close()
