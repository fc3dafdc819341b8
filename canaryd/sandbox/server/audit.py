"""The sandbox API server's audit log: which requests a client made, and what it got back.

Tests assert on it ("the controller patched the route exactly once", "no
writes after the lease was lost", "the CLI patched canaries/status, not the
Canary"). Kept in memory, bounded, queryable from Python (`server.audit`)
and over HTTP (`GET /sandbox/audit`, `DELETE /sandbox/audit`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    """One request. `verb` is get, list, watch, create, update, patch, delete or deletecollection."""

    time: float
    verb: str
    group: str
    version: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None
    user: str
    user_agent: str
    code: int
    patch_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """The last `limit` requests, oldest first."""

    def __init__(self, limit: int = 100_000) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=limit)

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        subresource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        user: str | None = None,
        user_agent: str | None = None,
        code: int | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        """Entries matching every given filter; `user_agent` matches as a substring,
        `subresource=""` selects requests to the main resource only."""
        result = []
        for entry in self._entries:
            if verb is not None and entry.verb != verb:
                continue
            if resource is not None and entry.resource != resource:
                continue
            if subresource is not None and (entry.subresource or "") != subresource:
                continue
            if namespace is not None and entry.namespace != namespace:
                continue
            if name is not None and entry.name != name:
                continue
            if user is not None and entry.user != user:
                continue
            if user_agent is not None and user_agent not in entry.user_agent:
                continue
            if code is not None and entry.code != code:
                continue
            if since is not None and entry.time < since:
                continue
            result.append(entry)
        return result

    @staticmethod
    def now() -> float:
        return time.time()
