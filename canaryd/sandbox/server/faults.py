"""Fault injection for the sandbox API server: the failures controllers meet in production.

Tests and benchmarks switch faults on from Python (`server.faults.add(...)`)
or over HTTP (`POST /sandbox/faults`), scoped to a resource, verb, namespace
or name, with a probability and an optional number of uses. Draws come from
a seeded random generator, so a seeded run injects the same faults each time.

Kinds of fault:
- `latency`: wait `latency_ms` before answering;
- `error`: answer with `code` (500 InternalError by default, 503, 504, 429);
- `conflict`: answer a write (update, patch, delete) with 409 Conflict;
- `watch_drop`: end the watch stream after `after_seconds`;
- `watch_stall`: keep the watch open but send nothing (no events, no bookmarks);
- `watch_gone`: answer the watch with an ERROR event carrying 410 Expired.
"""

from __future__ import annotations

import builtins
import itertools
import random
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("latency", "error", "conflict", "watch_drop", "watch_stall", "watch_gone")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


@dataclass
class Fault:
    """One injected fault and its scope (None matches anything)."""

    kind: str
    resource: str | None = None
    verb: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    rate: float = 1.0
    latency_ms: float = 0.0
    code: int = 500
    after_seconds: float = 0.0
    #: how many more times it may fire (None: unlimited).
    remaining: int | None = None
    id: str = ""
    fired: int = field(default=0)

    def scope_matches(
        self, verb: str, resource: str, subresource: str | None, namespace: str | None, name: str | None
    ) -> bool:
        if self.resource is not None and self.resource not in (resource, resource.split(".")[0]):
            return False
        if self.verb is not None and self.verb != verb:
            return False
        if self.namespace is not None and self.namespace != namespace:
            return False
        if self.name is not None and self.name != name:
            return False
        return self.subresource is None or self.subresource == subresource

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """The faults in force. Use `add`, `remove`, `clear`, `seed`; the server calls `draw`."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._random = random.Random(seed)
        self._ids = itertools.count(1)

    def seed(self, seed: int | None) -> None:
        self._random.seed(seed)

    def add(self, kind: str, **scope: Any) -> Fault:
        """Add a fault, e.g. `add("error", resource="deployments", verb="patch", rate=0.5, code=503)`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        known = set(Fault.__dataclass_fields__) - {"kind", "id", "fired"}
        unknown = set(scope) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        fault = Fault(kind=kind, **scope)
        if not 0.0 <= fault.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        fault.id = str(next(self._ids))
        self._faults.append(fault)
        return fault

    def remove(self, fault_id: str) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> None:
        self._faults.clear()

    def list(self) -> builtins.list[Fault]:
        return list(self._faults)

    def __bool__(self) -> bool:
        return bool(self._faults)

    def draw(
        self,
        kinds: tuple[str, ...],
        verb: str,
        resource: str,
        subresource: str | None,
        namespace: str | None,
        name: str | None,
    ) -> builtins.list[Fault]:
        """Faults of `kinds` that fire for this request (each consumes one use and one random draw)."""
        fired: builtins.list[Fault] = []
        for fault in list(self._faults):
            if fault.kind not in kinds or not fault.scope_matches(
                verb, resource, subresource, namespace, name
            ):
                continue
            if fault.kind == "conflict" and verb not in WRITE_VERBS:
                continue
            if fault.rate < 1.0 and self._random.random() >= fault.rate:
                continue
            fault.fired += 1
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            fired.append(fault)
        return fired
