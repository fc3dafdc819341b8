"""What canaryd puts on a route besides the two weights, and the guarded JSON Patch that gets it there.

The route belongs to the application team. canaryd owns exactly these parts
of it, and nothing else:

- the ``weight`` of ``<target>-primary`` and ``<target>-canary`` in every
  *weighted* rule (a rule of the team's that lists both Services once each);
- for A/B testing and sticky sessions, one rule of its own ahead of each
  weighted rule, named ``abtest-<k>.canaryd.io`` or ``sticky-<k>.canaryd.io``
  (``k`` counts the weighted rules from 0). It is a copy of the weighted rule
  (filters, timeouts and all) whose matches are the weighted rule's matches
  combined with the Canary's, and whose only backend is the canary Service;
- for mirroring, a ``RequestMirror`` filter to the canary Service at the end
  of each weighted rule's filters;
- for sticky sessions, a ``ResponseHeaderModifier`` filter on the canary
  backendRef of each weighted rule that adds ``Set-Cookie``.

Each part is recognisable in the route itself (a rule name ending in
``.canaryd.io``; a mirror whose backend is the canary Service, which canaryd
owns; a cookie filter of exactly the shape canaryd writes), so what canaryd
added is known after a restart without any memory of its own, and removing it
leaves the team's rules byte for byte as they were. A rule named by the team,
or any rule not named like canaryd's, is never edited, moved or removed.

Matches are combined, not appended, because Gateway API picks the most
specific match across rules (longest path first, then method, headers, query
parameters) and rule order only breaks ties: a canary rule carrying only the
Canary's header would lose to a weighted rule with a longer path. Combined,
each canary match is the weighted match plus the Canary's conditions, so it
takes exactly the requests the weighted rule would take that also meet them.

Rules canaryd builds are compared with what the API server stored after
applying Gateway API's defaults (``normalized``), so a default filled in by
the server never looks like a change to undo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canaryd.api.constants import GRPC_ROUTE
from canaryd.core.json_values import clone

#: The suffix of every rule name canaryd gives its own rules.
RULE_NAME_SUFFIX = ".canaryd.io"
ABTEST_RULE = "abtest-{}" + RULE_NAME_SUFFIX
STICKY_RULE = "sticky-{}" + RULE_NAME_SUFFIX
#: Gateway API v1 limits on a route (standard channel, HTTPRoute and GRPCRoute alike).
MAX_RULES = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES_PER_ROUTE = 128
MAX_FILTERS = 16
SET_COOKIE = "Set-Cookie"
#: The Set-Cookie value canaryd writes, and nothing else has (see ``cookie_header``).
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_.-]+=[a-z0-9]+; Max-Age=[0-9]+; Path=/$")

Rule = dict[str, Any]
Match = dict[str, Any]


class ShapeError(ValueError):
    """The route cannot take the shape asked for (too many rules or matches, contradictory matches)."""


@dataclass(frozen=True)
class StickyCookie:
    """The session-affinity cookie of one run: its name, its value (the revision) and its lifetime."""

    name: str
    value: str
    max_age_seconds: int


@dataclass(frozen=True)
class RouteShape:
    """What canaryd adds to a route besides the weights (nothing, by default).

    ``match`` applies to HTTPRoutes (HTTPRouteMatch dicts) and ``grpc_match``
    to GRPCRoutes (GRPCRouteMatch dicts): requests matching either go to the
    canary only. ``mirror_percent`` mirrors that share of each weighted
    rule's requests to the canary. ``sticky`` keeps a client that the canary
    served on the canary (HTTPRoutes only: gRPC clients do not keep cookies).
    """

    match: tuple[Match, ...] = ()
    grpc_match: tuple[Match, ...] = ()
    mirror_percent: int | None = None
    sticky: StickyCookie | None = None

    def for_kind(self, kind: str) -> RouteShape:
        """The parts that apply to a route of this kind."""
        if kind == GRPC_ROUTE:
            return RouteShape(grpc_match=self.grpc_match, mirror_percent=self.mirror_percent)
        return RouteShape(match=self.match, mirror_percent=self.mirror_percent, sticky=self.sticky)

    @property
    def plain(self) -> bool:
        return not self.match and not self.grpc_match and self.mirror_percent is None and self.sticky is None


PLAIN = RouteShape()


# ---- recognising canaryd's parts -----------------------------------------


def is_canaryd_rule(rule: object) -> bool:
    return isinstance(rule, dict) and str(rule.get("name") or "").endswith(RULE_NAME_SUFFIX)


def is_service_ref(ref: Mapping[str, Any], route_namespace: str) -> bool:
    group = ref.get("group", "")
    kind = ref.get("kind", "Service")
    namespace = ref.get("namespace", route_namespace)
    return group in ("", None) and kind == "Service" and namespace == route_namespace


def is_canaryd_mirror(item: object, route_namespace: str, canary: str) -> bool:
    """A RequestMirror filter whose backend is the canary Service (which canaryd owns)."""
    if not isinstance(item, dict) or item.get("type") != "RequestMirror":
        return False
    ref = (item.get("requestMirror") or {}).get("backendRef") or {}
    return isinstance(ref, dict) and ref.get("name") == canary and is_service_ref(ref, route_namespace)


def is_canaryd_cookie_filter(item: object) -> bool:
    """The ResponseHeaderModifier canaryd puts on the canary backendRef for session affinity."""
    if not isinstance(item, dict) or item.get("type") != "ResponseHeaderModifier":
        return False
    modifier = item.get("responseHeaderModifier")
    if not isinstance(modifier, dict) or set(modifier) != {"add"}:
        return False
    added = modifier.get("add")
    return (
        isinstance(added, list)
        and len(added) == 1
        and isinstance(added[0], dict)
        and str(added[0].get("name", "")).lower() == SET_COOKIE.lower()
        and bool(_COOKIE_VALUE.match(str(added[0].get("value", ""))))
    )


@dataclass(frozen=True)
class WeightedRule:
    """A rule of the team's that lists the primary and the canary Service once each."""

    index: int
    primary_ref: int
    canary_ref: int


def backend_indexes(rule: Mapping[str, Any], route_namespace: str, service: str) -> list[int]:
    return [
        j
        for j, ref in enumerate(rule.get("backendRefs") or [])
        if isinstance(ref, dict) and ref.get("name") == service and is_service_ref(ref, route_namespace)
    ]


def weighted_rules(route: Mapping[str, Any], primary: str, canary: str) -> list[WeightedRule]:
    """The team's rules canaryd weights, in order (canaryd's own rules are never among them)."""
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    found = []
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        if not isinstance(rule, dict) or is_canaryd_rule(rule):
            continue
        primaries = backend_indexes(rule, namespace, primary)
        canaries = backend_indexes(rule, namespace, canary)
        if len(primaries) == 1 and len(canaries) == 1:
            found.append(WeightedRule(i, primaries[0], canaries[0]))
    return found


def user_view(route: Mapping[str, Any], primary: str, canary: str) -> dict[str, Any]:
    """The route's spec without anything canaryd owns: its rules, filters and the two weights.

    Two routes with the same view differ only in canaryd's parts; this is what
    ``routes.spec_hash`` hashes and what the property tests compare byte for byte.
    """
    spec = clone(dict(route.get("spec") or {}))
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    weighted = {w.index: w for w in weighted_rules(route, primary, canary)}
    rules = spec.get("rules")
    if isinstance(rules, list):
        kept = []
        for i, rule in enumerate(rules):
            if is_canaryd_rule(rule):
                continue
            if i in weighted:
                rule = _without_canaryd_parts(rule, weighted[i], namespace, canary)
                for j in (weighted[i].primary_ref, weighted[i].canary_ref):
                    rule["backendRefs"][j].pop("weight", None)
            kept.append(rule)
        spec["rules"] = kept
    return spec


def _without_canaryd_parts(rule: Rule, weighted: WeightedRule, namespace: str, canary: str) -> Rule:
    """The weighted rule without canaryd's mirror filter and cookie filter (weights kept)."""
    rule = clone(rule)
    filters = [f for f in rule.get("filters") or [] if not is_canaryd_mirror(f, namespace, canary)]
    _set_list(rule, "filters", filters)
    ref = rule["backendRefs"][weighted.canary_ref]
    _set_list(ref, "filters", [f for f in ref.get("filters") or [] if not is_canaryd_cookie_filter(f)])
    return rule


def _set_list(holder: dict[str, Any], key: str, items: list[Any]) -> None:
    """Store a list canaryd edited; a list left empty by removing canaryd's items is dropped."""
    if items:
        holder[key] = items
    elif key in holder and holder[key] != []:
        del holder[key]


# ---- building canaryd's parts --------------------------------------------


def cookie_header(cookie: StickyCookie) -> str:
    return f"{cookie.name}={cookie.value}; Max-Age={cookie.max_age_seconds}; Path=/"


def cookie_filter(cookie: StickyCookie) -> dict[str, Any]:
    return {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"add": [{"name": SET_COOKIE, "value": cookie_header(cookie)}]},
    }


def cookie_match(cookie: StickyCookie) -> Match:
    """A header match on ``Cookie`` that finds this cookie among any others the client sends."""
    name = re.escape(cookie.name)
    value = re.escape(cookie.value)
    return {
        "headers": [{"name": "Cookie", "type": "RegularExpression", "value": f"(^|;\\s*){name}={value}(;|$)"}]
    }


def mirror_filter(canary_ref: Mapping[str, Any], percent: int) -> dict[str, Any]:
    backend = {k: canary_ref[k] for k in ("group", "kind", "name", "namespace", "port") if k in canary_ref}
    mirror: dict[str, Any] = {"backendRef": backend}
    if percent < 100:
        mirror["percent"] = percent
    return {"type": "RequestMirror", "requestMirror": mirror}


def _path_covers(prefix: str, path: str) -> bool:
    """Gateway API PathPrefix semantics: ``/a`` covers ``/a`` and ``/a/b``, not ``/ab``."""
    trimmed = prefix.rstrip("/")
    return trimmed == "" or path == trimmed or path.startswith(trimmed + "/")


def _merge_path(rule_path: Any, user_path: Any) -> tuple[bool, Any]:
    """(possible, path) of requests both paths take; the user's path narrows the rule's."""
    if user_path is None:
        return True, rule_path
    if rule_path is None:
        return True, user_path
    a_type, a_value = rule_path.get("type", "PathPrefix"), rule_path.get("value", "/")
    b_type, b_value = user_path.get("type", "PathPrefix"), user_path.get("value", "/")
    if (a_type, a_value) == (b_type, b_value):
        return True, rule_path
    if "RegularExpression" in (a_type, b_type):
        return False, None
    if a_type == "Exact" and b_type == "Exact":
        return False, None
    if a_type == "Exact":
        return _path_covers(b_value, a_value), rule_path
    if b_type == "Exact":
        return _path_covers(a_value, b_value), user_path
    if _path_covers(a_value, b_value):
        return True, user_path
    if _path_covers(b_value, a_value):
        return True, rule_path
    return False, None


def _merge_conditions(
    ours: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]], *, fold_case: bool
) -> tuple[bool, list[dict[str, Any]]]:
    """Header or query-parameter conditions of both sides; the same name twice must agree."""
    merged: dict[str, dict[str, Any]] = {}
    for condition in [*ours, *theirs]:
        key = str(condition.get("name", ""))
        key = key.lower() if fold_case else key
        wanted = (condition.get("type", "Exact"), condition.get("value"))
        if key in merged:
            if (merged[key].get("type", "Exact"), merged[key].get("value")) != wanted:
                return False, []
            continue
        merged[key] = dict(condition)
    return True, list(merged.values())


def _merge_grpc_method(rule_method: Any, user_method: Any) -> tuple[bool, Any]:
    if user_method is None:
        return True, rule_method
    if rule_method is None:
        return True, user_method
    if rule_method == user_method:
        return True, rule_method
    if rule_method.get("type", "Exact") != "Exact" or user_method.get("type", "Exact") != "Exact":
        return False, None
    merged = dict(rule_method)
    for key in ("service", "method"):
        if key in user_method:
            if key in merged and merged[key] != user_method[key]:
                return False, None
            merged[key] = user_method[key]
    return True, merged


def combine_match(rule_match: Mapping[str, Any], user_match: Mapping[str, Any], kind: str) -> Match | None:
    """A match taking the requests both take, or None when no request can meet both."""
    merged: Match = {}
    if kind == GRPC_ROUTE:
        ok, method = _merge_grpc_method(rule_match.get("method"), user_match.get("method"))
        if not ok:
            return None
        if method is not None:
            merged["method"] = method
    else:
        ok, path = _merge_path(rule_match.get("path"), user_match.get("path"))
        if not ok:
            return None
        if path is not None:
            merged["path"] = path
        rule_method, user_method = rule_match.get("method"), user_match.get("method")
        if rule_method is not None and user_method is not None and rule_method != user_method:
            return None
        if rule_method is not None or user_method is not None:
            merged["method"] = rule_method if rule_method is not None else user_method
    ok, headers = _merge_conditions(
        rule_match.get("headers") or [], user_match.get("headers") or [], fold_case=True
    )
    if not ok:
        return None
    if headers:
        merged["headers"] = headers
    if kind != GRPC_ROUTE:
        ok, params = _merge_conditions(
            rule_match.get("queryParams") or [], user_match.get("queryParams") or [], fold_case=False
        )
        if not ok:
            return None
        if params:
            merged["queryParams"] = params
    return merged


def _rule_matches(rule: Mapping[str, Any], kind: str) -> list[Match]:
    matches = [m for m in rule.get("matches") or [] if isinstance(m, dict)]
    if matches:
        return matches
    # An HTTPRoute rule without matches takes every request (the API server stores it as PathPrefix /).
    return [{"path": {"type": "PathPrefix", "value": "/"}}] if kind != GRPC_ROUTE else [{}]


def canary_rule(
    rule: Rule,
    weighted: WeightedRule,
    kind: str,
    name: str,
    user_matches: Sequence[Mapping[str, Any]],
    *,
    namespace: str,
    canary: str,
) -> Rule:
    """canaryd's rule ahead of a weighted rule: a copy of it sending matching requests to the canary."""
    combined: list[Match] = []
    for rule_match in _rule_matches(rule, kind):
        for user_match in user_matches:
            match = combine_match(rule_match, user_match, kind)
            if match is not None and match not in combined:
                combined.append(match)
    if not combined:
        raise ShapeError(
            f"rule {weighted.index}: no request can match both its matches and the Canary's "
            "(their paths, methods or headers contradict each other)"
        )
    if len(combined) > MAX_MATCHES_PER_RULE:
        raise ShapeError(
            f"rule {weighted.index}: combining its {len(_rule_matches(rule, kind))} matches with the "
            f"Canary's {len(user_matches)} gives {len(combined)}, more than the {MAX_MATCHES_PER_RULE} "
            "a rule may have"
        )
    ref = clone(rule["backendRefs"][weighted.canary_ref])
    ref["weight"] = 1
    _set_list(ref, "filters", [f for f in ref.get("filters") or [] if not is_canaryd_cookie_filter(f)])
    built: Rule = {"name": name}
    for key, value in rule.items():
        if key in ("name", "matches", "backendRefs"):
            continue
        built[key] = clone(value)
    _set_list(
        built,
        "filters",
        [f for f in built.get("filters") or [] if not is_canaryd_mirror(f, namespace, canary)],
    )
    built["matches"] = combined
    built["backendRefs"] = [ref]
    return built


def _weighted_rule_as_wanted(
    rule: Rule,
    weighted: WeightedRule,
    namespace: str,
    canary: str,
    weights: tuple[int, int],
    shape: RouteShape,
) -> Rule:
    """The team's weighted rule with canaryd's parts as wanted: the weights, the mirror, the cookie filter."""
    wanted = _without_canaryd_parts(rule, weighted, namespace, canary)
    refs = wanted["backendRefs"]
    refs[weighted.primary_ref]["weight"] = weights[0]
    refs[weighted.canary_ref]["weight"] = weights[1]
    if shape.mirror_percent is not None:
        filters = [
            *(wanted.get("filters") or []),
            mirror_filter(refs[weighted.canary_ref], shape.mirror_percent),
        ]
        if len(filters) > MAX_FILTERS:
            raise ShapeError(f"rule {weighted.index} has {len(filters) - 1} filters: no room for a mirror")
        wanted["filters"] = filters
    if shape.sticky is not None:
        ref = refs[weighted.canary_ref]
        ref["filters"] = [*(ref.get("filters") or []), cookie_filter(shape.sticky)]
    return wanted


def desired_rules(
    route: Mapping[str, Any],
    kind: str,
    primary: str,
    canary: str,
    weights: tuple[int, int],
    shape: RouteShape,
) -> list[Rule]:
    """Every rule of the route as canaryd wants it. Raises ShapeError when the route cannot take it."""
    if (shape.match or shape.grpc_match) and not (shape.grpc_match if kind == GRPC_ROUTE else shape.match):
        field = "analysis.grpcMatch" if kind == GRPC_ROUTE else "analysis.match"
        raise ShapeError(f"A/B testing on a {kind} needs {field}")
    shape = shape.for_kind(kind)
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    rules = [r for r in (route.get("spec") or {}).get("rules") or [] if isinstance(r, dict)]
    weighted = {w.index: w for w in weighted_rules(route, primary, canary)}
    user_matches = list(shape.grpc_match if kind == GRPC_ROUTE else shape.match)
    if shape.sticky is not None:
        user_matches = [cookie_match(shape.sticky)]
    template = ABTEST_RULE if shape.match or shape.grpc_match else STICKY_RULE
    result: list[Rule] = []
    for i, rule in enumerate(rules):
        if is_canaryd_rule(rule):
            continue
        if i not in weighted:
            result.append(rule)
            continue
        ordinal = sorted(weighted).index(i)
        if user_matches:
            built = canary_rule(
                rule,
                weighted[i],
                kind,
                template.format(ordinal),
                user_matches,
                namespace=namespace,
                canary=canary,
            )
            result.append(built)
        result.append(_weighted_rule_as_wanted(rule, weighted[i], namespace, canary, weights, shape))
    if len(result) > MAX_RULES:
        raise ShapeError(
            f"it would have {len(result)} rules with canaryd's, more than the {MAX_RULES} a route may have"
        )
    total = sum(_match_count(r, kind) for r in result)
    if total > MAX_MATCHES_PER_ROUTE:
        raise ShapeError(
            f"it would have {total} matches with canaryd's rules, more than the {MAX_MATCHES_PER_ROUTE} "
            "a route may have"
        )
    return result


def _match_count(rule: Mapping[str, Any], kind: str) -> int:
    """How many matches the API server counts for a rule (an HTTPRoute rule without any has one)."""
    matches = rule.get("matches") or []
    return len(matches) if matches or kind == GRPC_ROUTE else 1


def shape_problem(route: Mapping[str, Any], kind: str, primary: str, canary: str, shape: RouteShape) -> str:
    """Why the route cannot take ``shape`` (at any weights), or "" when it can."""
    try:
        desired_rules(route, kind, primary, canary, (100, 0), shape)
    except ShapeError as error:
        return str(error)
    return ""


# ---- comparing with what the API server stored -----------------------------


def _defaulted_ref(ref: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(ref)
    out.setdefault("group", "")
    out.setdefault("kind", "Service")
    return out


def _defaulted_filter(item: Mapping[str, Any]) -> dict[str, Any]:
    out = clone(dict(item))
    mirror = out.get("requestMirror")
    if isinstance(mirror, dict):
        if isinstance(mirror.get("backendRef"), dict):
            mirror["backendRef"] = _defaulted_ref(mirror["backendRef"])
        if isinstance(mirror.get("fraction"), dict):
            mirror["fraction"].setdefault("denominator", 100)
    return out


def _defaulted_match(match: Mapping[str, Any], kind: str) -> dict[str, Any]:
    out = clone(dict(match))
    if kind != GRPC_ROUTE:
        path = out.get("path")
        if isinstance(path, dict):
            path.setdefault("type", "PathPrefix")
            path.setdefault("value", "/")
        else:
            out["path"] = {"type": "PathPrefix", "value": "/"}
        for param in out.get("queryParams") or []:
            if isinstance(param, dict):
                param.setdefault("type", "Exact")
    elif isinstance(out.get("method"), dict):
        out["method"].setdefault("type", "Exact")
    for header in out.get("headers") or []:
        if isinstance(header, dict):
            header.setdefault("type", "Exact")
    return out


def normalized(rule: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A rule with Gateway API's defaults filled in, as a real API server stores it."""
    out = clone(dict(rule))
    matches = out.get("matches")
    if kind != GRPC_ROUTE and not matches:
        out["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    if isinstance(out.get("matches"), list):
        out["matches"] = [_defaulted_match(m, kind) for m in out["matches"] if isinstance(m, dict)]
    if isinstance(out.get("filters"), list):
        out["filters"] = [_defaulted_filter(f) for f in out["filters"] if isinstance(f, dict)]
    refs = []
    for ref in out.get("backendRefs") or []:
        if isinstance(ref, dict):
            fixed = _defaulted_ref(ref)
            fixed.setdefault("weight", 1)
            if isinstance(fixed.get("filters"), list):
                fixed["filters"] = [_defaulted_filter(f) for f in fixed["filters"] if isinstance(f, dict)]
            refs.append(fixed)
    if "backendRefs" in out:
        out["backendRefs"] = refs
    return out


def _same_rule(current: Mapping[str, Any], wanted: Mapping[str, Any], kind: str) -> bool:
    if is_canaryd_rule(current) or is_canaryd_rule(wanted):
        return is_canaryd_rule(current) and normalized(current, kind) == normalized(wanted, kind)
    return _same_user_rule(current, wanted, kind)


def _same_user_rule(current: Mapping[str, Any], wanted: Mapping[str, Any], kind: str) -> bool:
    """A team's rule as wanted: exactly as stored, but canaryd's own filters may carry server defaults."""
    if current == wanted:
        return True
    return normalized(current, kind) == normalized(wanted, kind) and _strip_filters(
        current
    ) == _strip_filters(wanted)


def _strip_filters(rule: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rule.items() if k != "filters"}
    out["backendRefs"] = [
        {k: v for k, v in ref.items() if k != "filters"} if isinstance(ref, dict) else ref
        for ref in rule.get("backendRefs") or []
    ]
    return out


# ---- the patch -------------------------------------------------------------


def route_patch(
    route: Mapping[str, Any],
    kind: str,
    primary: str,
    canary: str,
    weights: tuple[int, int],
    shape: RouteShape = PLAIN,
) -> list[dict[str, Any]]:
    """The JSON Patch that gives the route these weights and this shape; [] when it already has them.

    The patch first tests the route's resourceVersion, so it applies only to
    the route exactly as canaryd read it; every edit also tests the name at
    the index it writes (a backendRef's, or a canaryd rule's before removing
    it). The team's rules are edited only in canaryd's parts: the two
    weights, and the filter lists that hold canaryd's mirror or cookie filter
    (written back with the team's own filters unchanged and in order).
    Raises ShapeError when the route cannot take ``shape``.
    """
    meta = route.get("metadata") or {}
    current = [r for r in (route.get("spec") or {}).get("rules") or [] if isinstance(r, dict)]
    wanted = desired_rules(route, kind, primary, canary, weights, shape)
    if len(current) == len(wanted) and all(
        _same_rule(c, w, kind) for c, w in zip(current, wanted, strict=True)
    ):
        return []
    ours_in_place = [i for i, r in enumerate(current) if is_canaryd_rule(r)] == [
        i for i, r in enumerate(wanted) if is_canaryd_rule(r)
    ] and all(_same_rule(c, w, kind) for c, w in zip(current, wanted, strict=False) if is_canaryd_rule(c))
    changes: list[dict[str, Any]] = []
    if ours_in_place:
        for i, (have, want) in enumerate(zip(current, wanted, strict=True)):
            if not is_canaryd_rule(have):
                changes.extend(_rule_edits(f"/spec/rules/{i}", have, want, kind))
    else:
        for i in reversed(range(len(current))):
            if is_canaryd_rule(current[i]):
                changes.append({"op": "test", "path": f"/spec/rules/{i}/name", "value": current[i]["name"]})
                changes.append({"op": "remove", "path": f"/spec/rules/{i}"})
        theirs = [r for r in current if not is_canaryd_rule(r)]
        their_wanted = [r for r in wanted if not is_canaryd_rule(r)]
        for i, (have, want) in enumerate(zip(theirs, their_wanted, strict=True)):
            changes.extend(_rule_edits(f"/spec/rules/{i}", have, want, kind))
        for i, rule in enumerate(wanted):
            if is_canaryd_rule(rule):
                changes.append({"op": "add", "path": f"/spec/rules/{i}", "value": rule})
    if not changes:
        return []
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion", "")},
        *changes,
    ]


def _list_edit(path: str, have: Mapping[str, Any], want: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    before, after = have.get(key), want.get(key)
    if before == after or (
        key in have and key in want and _normalized_filters(before) == _normalized_filters(after)
    ):
        return []
    if key not in want:
        return [{"op": "remove", "path": f"{path}/{key}"}]
    return [{"op": "replace" if key in have else "add", "path": f"{path}/{key}", "value": after}]


def _normalized_filters(items: Any) -> Any:
    if not isinstance(items, list):
        return items
    return [_defaulted_filter(f) if isinstance(f, dict) else f for f in items]


def _rule_edits(path: str, have: Rule, want: Rule, kind: str) -> list[dict[str, Any]]:
    """Edits of canaryd's parts of one of the team's rules (weights and canaryd's filters only)."""
    if _same_user_rule(have, want, kind):
        return []
    edits: list[dict[str, Any]] = []
    for j, (ref, wanted_ref) in enumerate(
        zip(have.get("backendRefs") or [], want.get("backendRefs") or [], strict=True)
    ):
        ref_path = f"{path}/backendRefs/{j}"
        ref_edits = []
        if "weight" in wanted_ref and ("weight" not in ref or ref["weight"] != wanted_ref["weight"]):
            op = "replace" if "weight" in ref else "add"
            ref_edits.append({"op": op, "path": f"{ref_path}/weight", "value": wanted_ref["weight"]})
        ref_edits.extend(_list_edit(ref_path, ref, wanted_ref, "filters"))
        if ref_edits:
            edits.append({"op": "test", "path": f"{ref_path}/name", "value": ref["name"]})
            edits.extend(ref_edits)
    edits.extend(_list_edit(path, have, want, "filters"))
    return edits


__all__ = [
    "ABTEST_RULE",
    "PLAIN",
    "RULE_NAME_SUFFIX",
    "STICKY_RULE",
    "RouteShape",
    "ShapeError",
    "StickyCookie",
    "WeightedRule",
    "canary_rule",
    "combine_match",
    "cookie_filter",
    "cookie_match",
    "desired_rules",
    "is_canaryd_cookie_filter",
    "is_canaryd_mirror",
    "is_canaryd_rule",
    "normalized",
    "route_patch",
    "shape_problem",
    "user_view",
    "weighted_rules",
]
