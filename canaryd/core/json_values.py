"""Copies of JSON values (what the API server sends: dicts, lists, strings, numbers, booleans, None).

Route edits, primary templates and HPA copies start from a copy of the
object as the cache holds it, on every pass of every Canary. ``copy.deepcopy``
pays for generality these values never need (a memo of every object seen,
reducer lookups); copying dicts and lists directly is several times faster.
Anything else that is mutable is still copied with ``copy.deepcopy``.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar, cast

_Json = TypeVar("_Json")
_IMMUTABLE = (str, int, float, bool, type(None))


def clone(value: _Json) -> _Json:
    """A deep copy of a JSON value; the original is never shared with the copy."""
    return cast(_Json, _clone(value))


def _clone(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _clone(item) for key, item in value.items()}
    if kind is list:
        return [_clone(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


__all__ = ["clone"]
