"""Calling a Canary's webhooks: the webhook round before a decision, and the background sender.

The round (:class:`HookRunner`) calls the gate and check webhooks the core
says are due (``core.hooks.due_webhooks``), all at once, each within its own
``timeout`` with its retries inside it, so the Canary's worker waits at most
the longest timeout of the round and never blocks the event loop; the
answers go to the decision as observations, like an analysis round's.

``post-rollout``, ``rollback`` and ``event`` webhooks are never waited for
(:class:`BackgroundHooks`): each webhook has its own queue, sent in order by a
task of its own with the webhook's timeout and retries and backoff between
them; a full queue drops the newest call and counts it. A failed call is
logged and counted on /metrics (``canaryd_webhook_deliveries_total``); a
failed post-rollout or rollback call also gets a Warning Event on the Canary
(an ``event`` webhook's failure gets none, or it would be called about it).

A webhook with ``signingKeySecretRef`` is signed with the key from that
Secret in the Canary's namespace; when the Secret or the key is missing the
call is not sent at all (outcome ``not-sent``, saying what to create), never
sent unsigned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.adapters.webhook_delivery import DeliveryPolicy, DeliveryResult, WebhookSender
from canaryd.api.constants import HookOutcome, HookType
from canaryd.api.models import Canary, CanaryStatus, Webhook
from canaryd.core.observations import HookResult
from canaryd.core.webhooks import EventInfo, payload_for_canary
from canaryd.runtime.secrets import SecretProblem, SecretReader

log = structlog.get_logger("canaryd.hooks")

#: Calls waiting per background webhook before new ones are dropped.
QUEUE_SIZE = 100


def round_policy(webhook: Webhook) -> DeliveryPolicy:
    """A gate or check call: its timeout bounds the whole call, retries included."""
    timeout = webhook.timeout_seconds
    return DeliveryPolicy(
        timeout=timeout,
        retries=webhook.retries,
        backoff=min(0.5, timeout / 10),
        backoff_cap=max(0.5, timeout / 4),
        budget=timeout,
    )


def background_policy(webhook: Webhook) -> DeliveryPolicy:
    """A background call: the timeout per attempt, retries with backoff up to 10 s apart."""
    return DeliveryPolicy(
        timeout=webhook.timeout_seconds, retries=webhook.retries, backoff=0.5, backoff_cap=10.0
    )


def with_status(canary: Canary, status: CanaryStatus) -> Canary:
    return canary.model_copy(update={"status": status})


class HookRunner:
    """Sends webhook payloads for the controller: the round's calls and the background queues share it."""

    def __init__(
        self,
        secrets: SecretReader,
        metrics: DeliveryMetrics,
        *,
        sender: WebhookSender | None = None,
    ) -> None:
        self.secrets = secrets
        self.metrics = metrics
        self.sender = sender or WebhookSender(metrics=metrics)

    async def close(self) -> None:
        await self.sender.close()

    async def signing_key(self, canary: Canary, webhook: Webhook) -> bytes | None:
        """The webhook's key, or None when it is unsigned; raises SecretProblem when it cannot be read."""
        ref = webhook.signing_key_secret_ref
        if ref is None:
            return None
        try:
            return await self.secrets.value(canary.metadata.namespace, ref.name, ref.key)
        except SecretProblem as exc:
            raise SecretProblem(f"{exc} (signingKeySecretRef of webhook {webhook.name}): not sent") from exc

    async def run(
        self, canary: Canary, webhooks: tuple[Webhook, ...], now: datetime
    ) -> tuple[HookResult, ...]:
        """Call every due webhook at once; each answer (or failure) becomes a HookResult."""
        results = await asyncio.gather(*(self._call(canary, w, now) for w in webhooks))
        return tuple(results)

    async def _call(self, canary: Canary, webhook: Webhook, now: datetime) -> HookResult:
        try:
            key = await self.signing_key(canary, webhook)
        except SecretProblem as exc:
            self.metrics.observe_webhook(webhook.type.value, HookOutcome.NOT_SENT.value, 0, 0.0)
            return HookResult(
                webhook.name, webhook.type, HookOutcome.NOT_SENT, now, message=str(exc), attempts=0
            )
        payload = payload_for_canary(
            canary, webhook.type, metadata=webhook.metadata, now=now, webhook=webhook.name
        )
        result = await self.sender.call_webhook(
            webhook.url, payload, policy=round_policy(webhook), signing_key=key
        )
        log.info(
            "webhook called",
            webhook=webhook.name,
            type=webhook.type.value,
            outcome=result.outcome.value,
            status=result.status,
            attempts=result.attempts,
            seconds=round(result.elapsed, 4),
        )
        return _hook_result(webhook, result, now)


def _hook_result(webhook: Webhook, result: DeliveryResult, now: datetime) -> HookResult:
    return HookResult(
        name=webhook.name,
        type=webhook.type,
        outcome=HookOutcome(result.outcome.value),
        called_at=now,
        code=result.status,
        message=result.message,
        attempts=result.attempts,
    )


#: Called when a post-rollout or rollback call failed: (the Canary, the webhook, what happened).
FailureReport = Callable[[Canary, Webhook, str], Awaitable[None]]


@dataclass
class _Queue:
    items: asyncio.Queue[tuple[Canary, Webhook, dict[str, Any]]]
    task: asyncio.Task[None] | None = None


class BackgroundHooks:
    """post-rollout, rollback and event calls, sent in order per webhook, never waited for."""

    def __init__(
        self,
        runner: HookRunner,
        *,
        on_failure: FailureReport | None = None,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.runner = runner
        self.on_failure = on_failure
        self.queue_size = queue_size
        self.clock = clock
        self._queues: dict[tuple[str, str, str], _Queue] = {}
        self._stopping = False

    def send(self, canary: Canary, kind: HookType, event: EventInfo | None = None) -> int:
        """Queue a call of each of the Canary's webhooks of ``kind``; returns how many were queued."""
        queued = 0
        for webhook in canary.spec.analysis.webhooks_of(kind):
            try:
                payload = payload_for_canary(
                    canary,
                    kind,
                    metadata=webhook.metadata,
                    now=self.clock(),
                    webhook=webhook.name,
                    event=event,
                )
            except ValueError as exc:  # a status the schema refuses must not stop the reconcile
                log.error("webhook payload not built", webhook=webhook.name, error=str(exc))
                continue
            if self._enqueue(canary, webhook, payload):
                queued += 1
        return queued

    def _enqueue(self, canary: Canary, webhook: Webhook, payload: dict[str, Any]) -> bool:
        metrics = self.runner.metrics
        if self._stopping:
            metrics.dropped_webhook(webhook.type.value, "shutdown")
            return False
        key = (canary.metadata.namespace, canary.metadata.name, webhook.name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(asyncio.Queue(maxsize=self.queue_size))
        try:
            queue.items.put_nowait((canary, webhook, payload))
        except asyncio.QueueFull:
            metrics.dropped_webhook(webhook.type.value, "queue-full")
            log.warning("webhook call dropped: queue full", webhook=webhook.name, type=webhook.type.value)
            return False
        if queue.task is None or queue.task.done():
            queue.task = asyncio.get_running_loop().create_task(
                self._drain(key, queue), name=f"webhook:{key[0]}/{key[1]}/{key[2]}"
            )
        return True

    async def _drain(self, key: tuple[str, str, str], queue: _Queue) -> None:
        while not queue.items.empty():
            canary, webhook, payload = queue.items.get_nowait()
            try:
                await self._deliver(canary, webhook, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one call must not end the queue
                log.error("background webhook failed", webhook=webhook.name, error=str(exc))
            finally:
                queue.items.task_done()

    async def _deliver(self, canary: Canary, webhook: Webhook, payload: dict[str, Any]) -> None:
        try:
            key = await self.runner.signing_key(canary, webhook)
        except SecretProblem as exc:
            self.runner.metrics.observe_webhook(webhook.type.value, HookOutcome.NOT_SENT.value, 0, 0.0)
            await self._failed(canary, webhook, str(exc))
            return
        result = await self.runner.sender.call_webhook(
            webhook.url, payload, policy=background_policy(webhook), signing_key=key
        )
        if not result.ok:
            await self._failed(canary, webhook, result.describe())

    async def _failed(self, canary: Canary, webhook: Webhook, what: str) -> None:
        log.warning(
            "webhook not delivered",
            namespace=canary.metadata.namespace,
            name=canary.metadata.name,
            webhook=webhook.name,
            type=webhook.type.value,
            result=what,
        )
        if webhook.type is not HookType.EVENT and self.on_failure is not None:
            with contextlib.suppress(Exception):
                await self.on_failure(canary, webhook, what)

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued call was sent (or failed); False when ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                for queue in list(self._queues.values()):
                    await queue.items.join()
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what is queued for up to ``drain_timeout`` seconds, then stop; the rest counts as dropped."""
        self._stopping = True
        await self.flush(drain_timeout)
        for queue in self._queues.values():
            if queue.task is not None:
                queue.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await queue.task
            while not queue.items.empty():
                _, webhook, _ = queue.items.get_nowait()
                self.runner.metrics.dropped_webhook(webhook.type.value, "shutdown")
        self._queues.clear()
