"""The limit on runs under way at once (``--max-concurrent-runs``).

A platform team caps how many Canaries move traffic at the same time; a run
that would exceed the cap waits in phase Waiting until one ends. Canaries are
decided concurrently, so a run that a decision has just started counts before
any status says so: the runtime keeps those as ``reserved`` keys until its
cache shows the new phase, and passes them here with the runs its cache shows.
"""

from __future__ import annotations

from collections.abc import Set

from canaryd.api.constants import ACTIVE_PHASES, Phase
from canaryd.api.models import CanaryStatus

#: A Canary by (namespace, name).
Key = tuple[str, str]


def run_slot_available(
    limit: int, key: Key, phase: Phase | None, running: Set[Key], reserved: Set[Key]
) -> bool:
    """Whether the Canary ``key`` (now in ``phase``) may start a run.

    ``limit`` 0 means no limit. A Canary already running, or already granted
    a slot, keeps it; otherwise the runs under way besides its own (``running``
    from status, ``reserved`` just started) must be fewer than the limit.
    """
    if limit <= 0 or phase in ACTIVE_PHASES or key in reserved:
        return True
    return len((running | reserved) - {key}) < limit


def starts_run(before: CanaryStatus, after: CanaryStatus) -> bool:
    """The decision takes the Canary into a run (it needs a slot until its status is seen)."""
    return after.phase in ACTIVE_PHASES and before.phase not in ACTIVE_PHASES
