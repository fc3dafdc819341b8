"""A Canary the controller cannot read gets Ready=False reason InvalidSpec and one Event, not a crash.

The CRD schema and the controller's models agree, so this happens when the
installed CRD is older or newer than the controller; the reason is a public
constant that alerts and scripts match on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from canaryd.api.constants import Reason
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.observe import Caches, RunSlots
from canaryd.runtime.reconciler import Reconciler
from tests.runtime import world
from tests.runtime.test_observe import DictCache

NS = "shop"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class RecordingWriter:
    """Keeps the status patches and Events the reconciler writes, and applies the patches to the cache."""

    def __init__(self, cache: DictCache) -> None:
        self.cache = cache
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.status_patches.append(patch)
        stored = self.cache.get(namespace, name)
        assert stored is not None
        stored.setdefault("status", {}).update(patch)

    async def record_event(
        self, regarding: dict[str, Any], type_: str, reason: str, note: str, **_: Any
    ) -> None:
        self.events.append((type_, reason, note))


class NoScheduler:
    def cancel(self, key: str) -> None:
        pass

    def wake_at(self, key: str, when: datetime) -> None:
        raise AssertionError("an invalid Canary needs no wake-up: a change to it is a watch event")


async def test_an_unreadable_canary_reads_invalid_spec_once() -> None:
    raw = world.canary(NS, "odd")
    raw["spec"]["analysis"]["stepWeights"] = [50, 10]  # decreasing: the models refuse it
    canaries = DictCache(raw)
    writer = RecordingWriter(canaries)
    reconciler = Reconciler(
        caches=Caches(
            canaries=canaries,  # type: ignore[arg-type]
            templates=DictCache(),  # type: ignore[arg-type]
            deployments=DictCache(),  # type: ignore[arg-type]
            services=DictCache(),  # type: ignore[arg-type]
            routes={},
        ),
        writer=writer,  # type: ignore[arg-type]
        scheduler=NoScheduler(),  # type: ignore[arg-type]
        metrics=ControllerMetrics(),
        slots=RunSlots(limit=0),
        analyzer=None,  # type: ignore[arg-type]
        decide=None,  # type: ignore[arg-type]
        analysis_due=None,  # type: ignore[arg-type]
        requeue=lambda key: None,
        clock=lambda: NOW,
    )
    await reconciler.reconcile((NS, "odd"))
    ready = next(c for c in raw["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec") == ("False", Reason.INVALID_SPEC)
    assert "stepWeights" in ready["message"]
    assert [(t, r) for t, r, _ in writer.events] == [("Warning", "InvalidSpec")]
    await reconciler.reconcile((NS, "odd"))
    assert len(writer.status_patches) == 1 and len(writer.events) == 1, "the same problem is reported once"
