"""What canaryd sends to a webhook: the versioned JSON payload, its exact bytes, and retry timing.

A webhook receiver (a gate, a smoke test, the load tester, a chat relay) is
written by someone else, against a contract they read in the README and in
``docs/webhook-payload-v1.schema.json``. Building the payload here, as a pure
function of the Canary's state and the hook, keeps that contract in one place
and testable against the schema without a network. ``encode_payload`` gives
the one byte string that is both sent and signed (see :mod:`canaryd.core.signing`),
so a receiver checking the signature checks exactly what it parses.

Version rule: fields are only ever added within ``webhooks.canaryd.io/v1``;
removing or changing the meaning of one makes ``v2``. Receivers should ignore
fields they do not know.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

# Their first home was here; code that imports them from here keeps working.
from canaryd.api.constants import CHECK_HOOKS as CHECK_HOOKS
from canaryd.api.constants import GATE_HOOKS as GATE_HOOKS
from canaryd.api.constants import HookType as HookType
from canaryd.api.constants import Verdict
from canaryd.api.models import Canary, MetricStatus
from canaryd.api.timestamps import format_rfc3339

WEBHOOK_API_VERSION: Final = "webhooks.canaryd.io/v1"
WEBHOOK_KIND: Final = "CanaryWebhook"
#: The header carrying the payload's schema version, so a receiver can route before parsing.
VERSION_HEADER: Final = "X-Canaryd-Webhook-Version"
#: The header naming the hook type (the payload's ``type``), for receivers that route on headers.
TYPE_HEADER: Final = "X-Canaryd-Webhook-Type"
#: The header carrying the payload's ``id``; retries of one delivery repeat it.
ID_HEADER: Final = "X-Canaryd-Delivery"
#: Longest metadata value and most metadata entries sent (the CRD will hold the same bounds).
MAX_METADATA_ENTRIES: Final = 64
MAX_METADATA_VALUE: Final = 4096


@dataclass(frozen=True)
class FailedMetric:
    """A metric whose last check failed, as a payload's ``failedMetrics`` names it."""

    name: str
    value: float | None
    message: str = ""


def failed_metrics(metrics: Sequence[MetricStatus]) -> tuple[FailedMetric, ...]:
    """The metrics of a status whose last check failed and counts (dry-run metrics never do)."""
    return tuple(
        FailedMetric(m.name, m.value, m.message)
        for m in metrics
        if m.verdict is Verdict.FAIL and not m.dry_run
    )


@dataclass(frozen=True)
class EventInfo:
    """The Event an ``event`` hook reports."""

    reason: str
    message: str
    #: "Normal" or "Warning", as in the Kubernetes Event.
    type: str = "Normal"


def _metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ValueError(f"webhook metadata has {len(metadata)} entries; at most {MAX_METADATA_ENTRIES}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"webhook metadata must map strings to strings, not {key!r}: {value!r}")
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(
                f"webhook metadata {key!r} is {len(value)} characters; at most {MAX_METADATA_VALUE}"
            )
        out[key] = value
    return out


def payload_id(payload: Mapping[str, Any]) -> str:
    """A stable id of one delivery: the hash of everything else in the payload.

    Two calls at different times get different ids (the timestamp differs);
    retries of one call send the same bytes and so the same id.
    """
    rest = {key: value for key, value in payload.items() if key != "id"}
    return hashlib.sha256(encode_payload(rest)).hexdigest()[:32]


def build_payload(
    *,
    hook: HookType | str,
    name: str,
    namespace: str,
    phase: str | None,
    revision: str | None,
    weight: int,
    step: int,
    failed_checks: int,
    metadata: Mapping[str, str],
    now: datetime,
    webhook: str | None = None,
    interval: str | None = None,
    event: EventInfo | None = None,
    failed: Sequence[FailedMetric] = (),
) -> dict[str, Any]:
    """The ``webhooks.canaryd.io/v1`` payload of one call of one hook.

    ``webhook`` is the name of the webhook entry in the Canary, ``interval``
    the analysis interval (a Go duration: how long the step lasts), ``event``
    the Event an ``event`` hook reports (required for that hook, refused for
    the others), ``failed`` the metrics whose last check failed (``failedMetrics``, left out when
    none). Raises ValueError for input the schema would refuse.
    """
    kind = HookType(hook)
    if (event is None) == (kind is HookType.EVENT):
        raise ValueError("an event hook needs the Event it reports, and only an event hook carries one")
    if event is not None and event.type not in ("Normal", "Warning"):
        raise ValueError(f"an Event's type is Normal or Warning, not {event.type!r}")
    if weight < 0 or weight > 100 or step < 0 or failed_checks < 0:
        raise ValueError(
            f"weight must be 0-100 and step and failedChecks >= 0, not {weight}, {step}, {failed_checks}"
        )
    payload: dict[str, Any] = {
        "apiVersion": WEBHOOK_API_VERSION,
        "kind": WEBHOOK_KIND,
        "type": kind.value,
        "name": name,
        "namespace": namespace,
        "phase": phase,
        "revision": revision,
        "weight": weight,
        "step": step,
        "failedChecks": failed_checks,
        "metadata": _metadata(metadata),
        "timestamp": format_rfc3339(now),
    }
    if webhook is not None:
        payload["webhook"] = webhook
    if interval is not None:
        payload["interval"] = interval
    if event is not None:
        payload["event"] = {"type": event.type, "reason": event.reason, "message": event.message}
    if failed:
        payload["failedMetrics"] = [
            {
                "name": metric.name,
                "value": metric.value if metric.value is not None and math.isfinite(metric.value) else None,
                "message": metric.message,
            }
            for metric in failed[:64]
        ]
    payload["id"] = payload_id(payload)
    return payload


def payload_for_canary(
    canary: Canary,
    hook: HookType | str,
    *,
    metadata: Mapping[str, str],
    now: datetime,
    webhook: str | None = None,
    event: EventInfo | None = None,
) -> dict[str, Any]:
    """``build_payload`` with every Canary field read from the Canary's metadata and status."""
    status = canary.status
    return build_payload(
        hook=hook,
        name=canary.metadata.name,
        namespace=canary.metadata.namespace,
        phase=status.phase.value if status.phase is not None else None,
        revision=status.revision,
        weight=status.canary_weight,
        step=status.step,
        failed_checks=status.failed_checks,
        metadata=metadata,
        now=now,
        webhook=webhook,
        interval=canary.spec.analysis.interval,
        event=event,
        failed=failed_metrics(status.metrics),
    )


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact UTF-8 JSON with sorted keys."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def headers_for(payload: Mapping[str, Any]) -> dict[str, str]:
    """The HTTP headers that go with a payload (its signature is added by the sender)."""
    return {
        "Content-Type": "application/json",
        VERSION_HEADER: str(payload.get("apiVersion", WEBHOOK_API_VERSION)),
        TYPE_HEADER: str(payload.get("type", "")),
        ID_HEADER: str(payload.get("id", "")),
    }


def retry_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    Exponential: ``base``, 2x``base``, 4x``base``..., never above ``cap``. A
    server's ``Retry-After`` is honoured when it asks for longer, up to ``cap``
    too, so one slow receiver cannot hold a caller indefinitely.
    """
    if attempt < 1:
        raise ValueError("attempt counts retries from 1")
    delay = min(cap, base * float(1 << min(attempt - 1, 62)))
    if retry_after is not None and retry_after > delay:
        delay = min(cap, retry_after)
    return max(0.0, delay)
