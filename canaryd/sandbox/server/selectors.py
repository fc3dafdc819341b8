"""Label and field selectors, in the text form of `?labelSelector=` and `?fieldSelector=`.

Lists and watches filter with these, as a real API server does, so the
controller's label-scoped caches and kubectl's `-l` and `--field-selector`
behave the same here. What a parsed label requirement matches is defined in
``canaryd.sandbox.labels``, which the simulators share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from canaryd.sandbox.labels import Requirement
from canaryd.sandbox.server.errors import bad_request

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`. Raises a 400 ApiError on bad syntax."""
    if not text:
        return []
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        set_match = re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^)]*)\)", part)
        if set_match:
            values = frozenset(v.strip() for v in set_match.group(4).split(",") if v.strip())
            requirements.append(Requirement(set_match.group(1), set_match.group(3), values))
            continue
        eq_match = re.fullmatch(rf"({_KEY})\s*(==|!=|=)\s*({_VALUE})", part)
        if eq_match:
            operator = "!=" if eq_match.group(3) == "!=" else "="
            requirements.append(Requirement(eq_match.group(1), operator, frozenset({eq_match.group(4)})))
            continue
        if re.fullmatch(rf"!\s*{_KEY}", part):
            requirements.append(Requirement(part[1:].strip(), "!exists"))
            continue
        if re.fullmatch(_KEY, part):
            requirements.append(Requirement(part, "exists"))
            continue
        raise bad_request(f"unable to parse requirement: found '{part}', expected a valid label selector")
    return requirements


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    equal: bool
    value: str


def parse_field_selector(
    text: str | None, allowed: Callable[[str], bool] | None = None
) -> list[FieldRequirement]:
    """Parse `metadata.name=x,metadata.namespace!=y`; unknown fields are a 400 like the real server."""
    if not text:
        return []
    requirements: list[FieldRequirement] = []
    for part in _split_top_level(text):
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==|!=|=)\s*(.*)", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path = match.group(1)
        if allowed is not None and not allowed(path):
            raise bad_request(f"field label not supported: {path}")
        requirements.append(FieldRequirement(path, match.group(2) != "!=", match.group(3)))
    return requirements


def field_value(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for segment in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(segment)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(requirements: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    return all((field_value(obj, r.path) == r.value) == r.equal for r in requirements)
