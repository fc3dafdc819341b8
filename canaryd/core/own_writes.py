"""Whether a write's answer shows only that write, and whether the pass that made it must look again.

Each answer canaryd gets to a write goes into its caches, and a cache change
looks at the Canary again. When the answer is exactly the object the pass
decided from with the pass's own patch applied (nobody else's change came in
between: a change that did would be in the answer, and its watch event,
older than the answer, would never be seen), the pass already knows
everything that look would see: the look observes, decides and writes
nothing, one more pass per step for nothing. The runtime skips it when
``is_status_echo`` or ``is_json_patch_echo`` says so, and the writing pass
asks ``look_again`` whether what it decided leads anywhere only another
decision can take it (a new phase waits for the effects of the last, e.g.
Promoting to Finalizing to Succeeded), in which case it queues that look
itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonpatch

from canaryd.api.constants import Phase
from canaryd.core import effects as fx
from canaryd.core.observations import RouteState

#: Metadata the server moves on every write, whoever makes it.
_SERVER_METADATA = frozenset({"resourceVersion", "managedFields"})
#: Effects that change nothing a decision reads (an Event, a chat message, a webhook call).
_UNOBSERVED = (fx.RecordEvent, fx.Notify, fx.CallWebhooks)


def merge_patched(original: Any, patch: Any) -> Any:
    """``original`` with a JSON merge patch (RFC 7386) applied: objects merge, null removes, else replace."""
    if not isinstance(patch, dict):
        return patch
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patched(result.get(key), value)
    return result


def _same_besides(
    base: dict[str, Any], answer: dict[str, Any], keys: Iterable[str], metadata: frozenset[str]
) -> bool:
    """Top-level fields other than ``keys`` equal, and metadata equal but for the ``metadata`` fields."""
    skipped = {"metadata", *keys}
    if {k: v for k, v in base.items() if k not in skipped} != {
        k: v for k, v in answer.items() if k not in skipped
    }:
        return False
    base_meta, answer_meta = base.get("metadata") or {}, answer.get("metadata") or {}
    if not isinstance(base_meta, dict) or not isinstance(answer_meta, dict):
        return False
    return {k: v for k, v in base_meta.items() if k not in metadata} == {
        k: v for k, v in answer_meta.items() if k not in metadata
    }


def _kind_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """apiVersion and kind are left out of some answers and list items: they never tell objects apart here."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def is_status_echo(base: dict[str, Any], status_patch: dict[str, Any], answer: dict[str, Any]) -> bool:
    """The answer to a merge patch of ``{"status": status_patch}`` on /status is ``base`` with that patch."""
    if not isinstance(answer, dict) or not isinstance(base, dict):
        return False
    base, answer = _kind_fields(base), _kind_fields(answer)
    if not _same_besides(base, answer, ("status",), _SERVER_METADATA):
        return False
    expected: Any = merge_patched(base.get("status") or {}, status_patch)
    return bool(expected == (answer.get("status") or {}))


def is_json_patch_echo(
    base: dict[str, Any], operations: list[dict[str, Any]], answer: dict[str, Any]
) -> bool:
    """The answer to a JSON patch of the spec is ``base`` with those operations, its status untouched."""
    if not isinstance(answer, dict) or not isinstance(base, dict):
        return False
    try:
        expected = jsonpatch.apply_patch(base, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, ValueError):
        return False
    expected, answer = _kind_fields(expected), _kind_fields(answer)
    # A spec change moves metadata.generation; nothing else of the object's but what the patch says.
    return _same_besides(expected, answer, (), _SERVER_METADATA | {"generation"})


def look_again(
    before: Phase | None, after: Phase | None, effects: Iterable[fx.Effect], routes: Iterable[RouteState] = ()
) -> bool:
    """Whether a pass whose own writes' echoes were skipped must queue one more look at the Canary.

    No when the run stays in Progressing and the pass only recorded, notified,
    called webhooks or moved plain route weights: what comes next is due at a
    time (the next analysis round), which the pass scheduled. Yes after a
    change of phase (the new phase's first decision reads the effects of the
    last), after any other effect (workloads, Services, finalizers: their
    answers are read by the next decision), and when the routes (``routes``,
    as the pass observed them) carry or are given canaryd's rules or filters,
    which ``status.traffic`` reports as the routes show them.
    """
    if before != after or after is not Phase.PROGRESSING:
        return True
    if any(route.has_additions for route in routes):
        return True
    return not all(
        isinstance(effect, _UNOBSERVED) or (isinstance(effect, fx.SetRouteWeights) and effect.shape.plain)
        for effect in effects
    )


__all__ = ["is_json_patch_echo", "is_status_echo", "look_again", "merge_patched"]
