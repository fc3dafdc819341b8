"""Reading and weighting the app team's HTTPRoutes and GRPCRoutes.

The route belongs to the application team: canaryd changes only the parts
``canaryd.core.route_plan`` says it owns (the two weights in every rule that
lists both Services, and its own rules and filters for A/B testing, mirroring
and sticky sessions) and nothing else. Before any traffic moves, a route is
checked against the routing contract (it exists, at least one rule lists both
Services once each, no rule of the team's sends traffic to the canary Service
without the primary, every parent has Accepted it) and what is wrong is said
in words a person can act on. A rule that names only the primary stays pinned
to it, exactly as written. Every change is a JSON Patch guarded by ``test``
operations on the route's resourceVersion and on the names at the indexes it
writes, so that a concurrent edit by anyone makes the patch fail instead of
being overwritten.

A Gateway reports acceptance per route generation, and every change canaryd
makes is a new generation. Waiting for the Gateway to catch up after each
step would cost a status write and a false alarm; so an Accepted condition
for an older generation still counts when every generation since differs
from it only in canaryd's own parts (the spec hash leaves them out). What
canaryd knows about that is kept in the Canary's ``status.routeGenerations``
(see :func:`record_weight_write`), so it is the same after a restart of the
controller. A Gateway that reports on the current generation has the last
word: if it refuses the route, the route is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from canaryd.api.models import RouteGenerations, RouteKind
from canaryd.core.observations import RouteState
from canaryd.core.route_plan import (
    PLAIN,
    RouteShape,
    ShapeError,
    backend_indexes,
    is_canaryd_cookie_filter,
    is_canaryd_mirror,
    is_canaryd_rule,
    route_patch,
    user_view,
    weighted_rules,
)

#: Gateway API's default weight for a backendRef that sets none.
DEFAULT_WEIGHT = 1


def _weight(ref: Mapping[str, Any]) -> int:
    value = ref.get("weight", DEFAULT_WEIGHT)
    return int(value) if isinstance(value, int) else DEFAULT_WEIGHT


def _condition(conditions: list[Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == type_), None)


def _parent_key(ref: dict[str, Any], route_namespace: str) -> tuple[str, str, str, str, str]:
    return (
        str(ref.get("group", "gateway.networking.k8s.io") or "gateway.networking.k8s.io"),
        str(ref.get("kind", "Gateway") or "Gateway"),
        str(ref.get("namespace", route_namespace) or route_namespace),
        str(ref.get("name", "")),
        str(ref.get("sectionName", "") or ""),
    )


def _parent_label(ref: dict[str, Any], route_namespace: str) -> str:
    _, kind, ns, name, section = _parent_key(ref, route_namespace)
    where = f"{ns}/{name}" + (f" (listener {section})" if section else "")
    return f"{kind} {where}"


def spec_hash(route: Mapping[str, Any], primary: str, canary: str) -> str:
    """A hash of the route's spec without the parts canaryd owns (``route_plan.user_view``).

    Two generations with the same hash differ at most in canaryd's weights, rules and filters.
    """
    text = json.dumps(user_view(route, primary, canary), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def lag_is_weight_only(
    record: RouteGenerations | None, uid: str, generation: int, current_hash: str, observed: int
) -> bool:
    """Whether generations ``observed`` to ``generation`` of a route differ only in canaryd's two weights."""
    return (
        record is not None
        and bool(uid)
        and record.uid == uid
        and record.spec_hash == current_hash
        and record.first <= observed <= generation <= record.last
    )


def _acceptance_problem(
    route: Mapping[str, Any], label: str, weight_only: Callable[[int], bool]
) -> tuple[str, bool]:
    """(why the route's parents do not (yet) carry it or "", whether a parent refused its current generation).

    ``weight_only(observed)`` says whether the generations since ``observed``
    changed nothing but canaryd's own parts; an Accepted condition for such an
    older generation still counts.
    """
    meta = route.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    generation = meta.get("generation")
    parent_refs = [p for p in (route.get("spec") or {}).get("parentRefs") or [] if isinstance(p, dict)]
    statuses = [p for p in (route.get("status") or {}).get("parents") or [] if isinstance(p, dict)]
    if not parent_refs:
        return (
            f"{label} has no parentRefs, so no Gateway carries its traffic; add the Gateway to attach to",
            False,
        )
    for parent in parent_refs:
        key = _parent_key(parent, namespace)
        entries = [s for s in statuses if _parent_key(s.get("parentRef") or {}, namespace) == key]
        where = _parent_label(parent, namespace)
        if not entries:
            return (
                f"{label}: {where} has not reported on the route yet (no status.parents entry); "
                "check that the Gateway exists and its GatewayClass has a running implementation"
            ), False
        accepted_by_any = False
        refused_now = False
        last_problem = ""
        for entry in entries:
            cond = _condition(entry.get("conditions") or [], "Accepted")
            if cond is None:
                last_problem = f"{label}: {where} reports no Accepted condition yet"
                continue
            observed = cond.get("observedGeneration")
            current = not (
                isinstance(observed, int) and isinstance(generation, int) and observed < generation
            )
            if cond.get("status") != "True":
                reason = cond.get("reason") or "Unknown"
                message = cond.get("message") or ""
                last_problem = f"{label} is not accepted by {where}: {reason}" + (
                    f" ({message})" if message else ""
                )
                refused_now = refused_now or current
                continue
            # Some implementations never set observedGeneration; compare only when they do.
            if (
                isinstance(observed, int)
                and observed > 0
                and isinstance(generation, int)
                and observed < generation
                and not weight_only(observed)
            ):
                last_problem = (
                    f"{label}: {where} accepted generation {observed} but the route is at generation "
                    f"{generation}; waiting for the Gateway to process the latest change"
                )
                continue
            accepted_by_any = True
            break
        if not accepted_by_any:
            return last_problem, refused_now
    return "", False


def _rule_label(index: int, rule: Mapping[str, Any]) -> str:
    name = rule.get("name")
    return f"rule {index}" + (f" ({name})" if name else "")


def structure_problem(route: Mapping[str, Any], label: str, primary: str, canary: str) -> str:
    """Why canaryd cannot weight the route's rules, or "" when it can (see the module docstring)."""
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    rules = [r for r in (route.get("spec") or {}).get("rules") or [] if isinstance(r, dict)]
    for i, rule in enumerate(rules):
        if is_canaryd_rule(rule):
            continue
        primaries = backend_indexes(rule, namespace, primary)
        canaries = backend_indexes(rule, namespace, canary)
        where = f"{label} {_rule_label(i, rule)}"
        if canaries and not primaries:
            return (
                f"{where} sends traffic to {canary} without {primary}: canaryd scales the canary to 0 "
                f"outside a run, so those requests would fail; list both Services, or only {primary}"
            )
        if len(primaries) > 1 or len(canaries) > 1:
            names = [str(ref.get("name")) for ref in rule.get("backendRefs") or [] if isinstance(ref, dict)]
            return (
                f"{where} must list {primary} and {canary} once each for canaryd to weight it; "
                f"it lists {', '.join(names)}"
            )
    if not weighted_rules(route, primary, canary):
        return (
            f"{label} has no rule with backendRefs {primary} and {canary}; list both Services "
            "(same port) in each rule canaryd should weight (a rule naming only the primary stays as written)"
        )
    return ""


#: The rules that name canaryd's Services: (rule index, [(backendRef index, backendRef)]).
OurRules = list[tuple[int, list[tuple[int, dict[str, Any]]]]]


def _port_problem(label: str, our_rules: OurRules, port: int) -> str:
    """Why canaryd's backendRefs would carry traffic to a port its Services do not have; "" if none."""
    for i, refs in our_rules:
        for _, ref in refs:
            value = ref.get("port")
            if value == port and not isinstance(value, bool):
                continue
            given = "no port" if value is None else f"port {value}"
            return (
                f"{label} rule {i}: backendRef {ref.get('name')} has {given}, but canaryd's Services serve "
                f"port {port} (spec.service.port), so that traffic would go nowhere; set port: {port} on "
                "both backendRefs"
            )
    return ""


def _shared_backends(rules: list[dict[str, Any]], our_rules: OurRules, ours: set[str]) -> tuple[str, ...]:
    """The other Services the rules that name canaryd's two also name."""
    shared: set[str] = set()
    for i, _ in our_rules:
        for ref in rules[i].get("backendRefs") or []:
            if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"] not in ours:
                shared.add(ref["name"])
    return tuple(sorted(shared))


def inspect_route(
    kind: str,
    name: str,
    route: Mapping[str, Any] | None,
    primary_service: str,
    canary_service: str,
    record: RouteGenerations | None = None,
    port: int | None = None,
) -> RouteState:
    """Check one referenced route against the routing contract canaryd relies on.

    ``record`` is what the Canary's status says about this route's generations
    that differ only in canaryd's parts (see the module docstring). With
    ``port`` (the Canary's ``spec.service.port``), canaryd's backendRefs must
    name that port: a Gateway sends traffic for another port to nothing.
    """
    if route is None:
        return RouteState(
            kind=kind,
            name=name,
            exists=False,
            problem=f"{kind} {name} not found in the Canary's namespace; create it or fix spec.routeRefs",
            primary_service=primary_service,
            canary_service=canary_service,
        )
    meta = route.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    label = f"{kind} {namespace}/{name}"
    problem = structure_problem(route, label, primary_service, canary_service)
    rules = [r for r in (route.get("spec") or {}).get("rules") or [] if isinstance(r, dict)]
    weighted = weighted_rules(route, primary_service, canary_service)
    primary_weights = {_weight(rules[w.index]["backendRefs"][w.primary_ref]) for w in weighted}
    canary_weights = {_weight(rules[w.index]["backendRefs"][w.canary_ref]) for w in weighted}
    uid = str(meta.get("uid") or "")
    generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
    current_hash = spec_hash(route, primary_service, canary_service)
    acceptance, refused = _acceptance_problem(
        route,
        label,
        lambda observed: (
            generation is not None and lag_is_weight_only(record, uid, generation, current_hash, observed)
        ),
    )
    our_rules: OurRules = [
        (
            w.index,
            [(j, rules[w.index]["backendRefs"][j]) for j in (w.primary_ref, w.canary_ref)],
        )
        for w in weighted
    ]
    port_problem = _port_problem(label, our_rules, port) if port is not None and not problem else ""
    return RouteState(
        kind=kind,
        name=name,
        exists=True,
        has_backends=not problem,
        accepted=not acceptance,
        problem=problem or port_problem or acceptance,
        primary_weight=next(iter(primary_weights)) if len(primary_weights) == 1 else None,
        canary_weight=next(iter(canary_weights)) if len(canary_weights) == 1 else None,
        uid=uid,
        generation=generation,
        spec_hash=current_hash,
        shared_backends=_shared_backends(rules, our_rules, {primary_service, canary_service}),
        port_problem=port_problem,
        primary_service=primary_service,
        canary_service=canary_service,
        route=route,
        weighted_rules=len(weighted),
        canaryd_rules=tuple(str(r["name"]) for r in rules if is_canaryd_rule(r)),
        mirrored=any(
            is_canaryd_mirror(f, namespace, canary_service)
            for w in weighted
            for f in rules[w.index].get("filters") or []
        ),
        sticky=any(
            is_canaryd_cookie_filter(f)
            for w in weighted
            for f in rules[w.index]["backendRefs"][w.canary_ref].get("filters") or []
        ),
        refused=refused,
    )


def weight_patch(
    route: Mapping[str, Any],
    primary_service: str,
    canary_service: str,
    primary_weight: int,
    canary_weight: int,
) -> list[dict[str, Any]]:
    """The JSON Patch that sets the two weights (and removes canaryd's other parts); [] when nothing changes.

    Only the ``weight`` of canaryd's two backendRefs is written, in every rule
    that lists both. The patch first tests the route's resourceVersion and the
    name at each backendRef index, so that it applies only to the route exactly
    as canaryd read it. See ``route_plan.route_patch`` for the other shapes.
    """
    kind = str(route.get("kind") or "HTTPRoute")
    return route_patch(route, kind, primary_service, canary_service, (primary_weight, canary_weight))


def weights_match(state: RouteState, primary_weight: int, canary_weight: int) -> bool:
    """The route already carries exactly these weights in every rule canaryd weights."""
    return state.primary_weight == primary_weight and state.canary_weight == canary_weight


def shows(state: RouteState, primary_weight: int, canary_weight: int, shape: RouteShape = PLAIN) -> bool:
    """The route already has these weights and exactly this shape (canaryd's rules and filters)."""
    if state.route is None or not state.primary_service:
        return weights_match(state, primary_weight, canary_weight) and shape.plain and not state.has_additions
    try:
        patch = route_patch(
            state.route,
            state.kind,
            state.primary_service,
            state.canary_service,
            (primary_weight, canary_weight),
            shape,
        )
    except ShapeError:
        return False
    return not patch


def record_weight_write(
    records: Sequence[RouteGenerations],
    routes: Sequence[RouteState],
    primary_weight: int,
    canary_weight: int,
    shape: RouteShape = PLAIN,
) -> list[RouteGenerations]:
    """``status.routeGenerations`` once these weights and this shape are written on ``routes``.

    A route the write changes goes one generation further with the same spec
    apart from canaryd's parts: its range ends one past the generation observed,
    and starts where the recorded range started when the observed generation
    continues it (same object, same hash), else at the observed generation.
    The status is written before the routes, so a range may end one
    generation beyond what a failed write made; that generation is checked
    against the hash before it is trusted (``lag_is_weight_only``), whoever
    made it. Routes the Canary no longer names are forgotten.
    """
    recorded: dict[tuple[str, str], RouteGenerations] = {(r.kind, r.name): r for r in records}
    updated: list[RouteGenerations] = []
    for route in routes:
        old = recorded.get((route.kind, route.name))
        generation = route.generation
        changes = route.has_backends and not shows(route, primary_weight, canary_weight, shape)
        if not (route.exists and changes and generation is not None and route.uid and route.spec_hash):
            if old is not None:
                updated.append(old)
            continue
        continues = old is not None and lag_is_weight_only(
            old, route.uid, generation, route.spec_hash, generation
        )
        updated.append(
            RouteGenerations(
                kind=cast(RouteKind, route.kind),
                name=route.name,
                uid=route.uid,
                first=old.first if old is not None and continues else generation,
                last=generation + 1,
                spec_hash=route.spec_hash,
            )
        )
    return updated
