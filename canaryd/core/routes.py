"""Reading and weighting the app team's HTTPRoutes and GRPCRoutes.

The route belongs to the application team: canaryd changes exactly two
``weight`` fields in it and nothing else. Before any traffic moves, a route
is checked against the routing contract (it exists, every rule that names one
of canaryd's Services names both, every parent has Accepted it) and what is
wrong is said in words a person can act on. The weight change itself is a JSON
Patch guarded by ``test`` operations on the route's resourceVersion and on each
backendRef name, so that a concurrent edit by anyone makes the patch fail
instead of being overwritten.

A Gateway reports acceptance per route generation, and every weight change
makes a new generation. Waiting for the Gateway to catch up after each step
would cost a status write and a false alarm, and changing two weights cannot
make a route unacceptable; so an Accepted condition for an older generation
still counts when every generation since differs from it only in those two
weights. What canaryd knows about that is kept in the Canary's
``status.routeGenerations`` (see :func:`record_weight_write`), so it is the
same after a restart of the controller.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from canaryd.api.models import RouteGenerations, RouteKind
from canaryd.core.observations import RouteState

#: Gateway API's default weight for a backendRef that sets none.
DEFAULT_WEIGHT = 1


def _is_service_ref(ref: dict[str, Any], route_namespace: str) -> bool:
    group = ref.get("group", "")
    kind = ref.get("kind", "Service")
    namespace = ref.get("namespace", route_namespace)
    return group in ("", None) and kind == "Service" and namespace == route_namespace


def _our_refs(
    rule: dict[str, Any], route_namespace: str, primary: str, canary: str
) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i, ref)
        for i, ref in enumerate(rule.get("backendRefs") or [])
        if isinstance(ref, dict)
        and _is_service_ref(ref, route_namespace)
        and ref.get("name") in (primary, canary)
    ]


def _weight(ref: dict[str, Any]) -> int:
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


def spec_hash(route: dict[str, Any], primary: str, canary: str) -> str:
    """A hash of the route's spec with the weights of canaryd's two backendRefs left out.

    Two generations with the same hash differ at most in those weights.
    """
    spec = copy.deepcopy(route.get("spec") or {})
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    for rule in spec.get("rules") or []:
        if isinstance(rule, dict):
            for _, ref in _our_refs(rule, namespace, primary, canary):
                ref.pop("weight", None)
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
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


def _acceptance_problem(route: dict[str, Any], label: str, weight_only: Callable[[int], bool]) -> str:
    """Why the route's parents do not (yet) carry it, or "" when every parent accepted it.

    ``weight_only(observed)`` says whether the generations since ``observed``
    changed nothing but canaryd's two weights; an Accepted condition for such an
    older generation still counts.
    """
    meta = route.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    generation = meta.get("generation")
    parent_refs = [p for p in (route.get("spec") or {}).get("parentRefs") or [] if isinstance(p, dict)]
    statuses = [p for p in (route.get("status") or {}).get("parents") or [] if isinstance(p, dict)]
    if not parent_refs:
        return f"{label} has no parentRefs, so no Gateway carries its traffic; add the Gateway to attach to"
    for parent in parent_refs:
        key = _parent_key(parent, namespace)
        entries = [s for s in statuses if _parent_key(s.get("parentRef") or {}, namespace) == key]
        where = _parent_label(parent, namespace)
        if not entries:
            return (
                f"{label}: {where} has not reported on the route yet (no status.parents entry); "
                "check that the Gateway exists and its GatewayClass has a running implementation"
            )
        accepted_by_any = False
        last_problem = ""
        for entry in entries:
            cond = _condition(entry.get("conditions") or [], "Accepted")
            if cond is None:
                last_problem = f"{label}: {where} reports no Accepted condition yet"
                continue
            if cond.get("status") != "True":
                reason = cond.get("reason") or "Unknown"
                message = cond.get("message") or ""
                last_problem = f"{label} is not accepted by {where}: {reason}" + (
                    f" ({message})" if message else ""
                )
                continue
            observed = cond.get("observedGeneration")
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
            return last_problem
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
    route: dict[str, Any] | None,
    primary_service: str,
    canary_service: str,
    record: RouteGenerations | None = None,
    port: int | None = None,
) -> RouteState:
    """Check one referenced route against the routing contract canaryd relies on.

    ``record`` is what the Canary's status says about this route's weight-only
    generations (see the module docstring). With ``port`` (the Canary's
    ``spec.service.port``), canaryd's backendRefs must name that port: a
    Gateway sends traffic for another port to nothing.
    """
    if route is None:
        return RouteState(
            kind=kind,
            name=name,
            exists=False,
            problem=f"{kind} {name} not found in the Canary's namespace; create it or fix spec.routeRefs",
        )
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    label = f"{kind} {namespace}/{name}"
    rules = [r for r in (route.get("spec") or {}).get("rules") or [] if isinstance(r, dict)]
    our_rules = [
        (i, _our_refs(rule, namespace, primary_service, canary_service)) for i, rule in enumerate(rules)
    ]
    our_rules = [(i, refs) for i, refs in our_rules if refs]
    problem = ""
    if not our_rules:
        problem = (
            f"{label} has no rule with backendRefs {primary_service} and {canary_service}; "
            f"list both Services (same port) in the rule canaryd should weight"
        )
    else:
        for i, refs in our_rules:
            names = [ref.get("name") for _, ref in refs]
            if names.count(primary_service) != 1 or names.count(canary_service) != 1:
                problem = (
                    f"{label} rule {i} must list {primary_service} and {canary_service} once each "
                    f"as backendRefs; it lists {', '.join(str(n) for n in names)}"
                )
                break
    has_backends = not problem
    primary_weights = {
        _weight(ref) for _, refs in our_rules for _, ref in refs if ref.get("name") == primary_service
    }
    canary_weights = {
        _weight(ref) for _, refs in our_rules for _, ref in refs if ref.get("name") == canary_service
    }
    meta = route.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
    current_hash = spec_hash(route, primary_service, canary_service)
    acceptance = _acceptance_problem(
        route,
        label,
        lambda observed: (
            generation is not None and lag_is_weight_only(record, uid, generation, current_hash, observed)
        ),
    )
    port_problem = _port_problem(label, our_rules, port) if port is not None and has_backends else ""
    return RouteState(
        kind=kind,
        name=name,
        exists=True,
        has_backends=has_backends,
        accepted=not acceptance,
        problem=problem or port_problem or acceptance,
        primary_weight=next(iter(primary_weights)) if len(primary_weights) == 1 else None,
        canary_weight=next(iter(canary_weights)) if len(canary_weights) == 1 else None,
        uid=uid,
        generation=generation,
        spec_hash=current_hash,
        shared_backends=_shared_backends(rules, our_rules, {primary_service, canary_service}),
        port_problem=port_problem,
    )


def weight_patch(
    route: dict[str, Any], primary_service: str, canary_service: str, primary_weight: int, canary_weight: int
) -> list[dict[str, Any]]:
    """The JSON Patch that sets the two weights, guarded by ``test`` ops; [] when nothing would change.

    Only the ``weight`` of canaryd's two backendRefs is written, in every rule
    that names them. The patch first tests the route's resourceVersion and the
    name at each backendRef index, so that it applies only to the route exactly
    as canaryd read it.
    """
    meta = route.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    wanted = {primary_service: primary_weight, canary_service: canary_weight}
    changes: list[dict[str, Any]] = []
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        if not isinstance(rule, dict):
            continue
        for j, ref in _our_refs(rule, namespace, primary_service, canary_service):
            weight = wanted[str(ref["name"])]
            if "weight" in ref and ref["weight"] == weight:
                continue
            base = f"/spec/rules/{i}/backendRefs/{j}"
            changes.append({"op": "test", "path": f"{base}/name", "value": ref["name"]})
            changes.append(
                {"op": "replace" if "weight" in ref else "add", "path": f"{base}/weight", "value": weight}
            )
    if not changes:
        return []
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion", "")},
        *changes,
    ]


def weights_match(state: RouteState, primary_weight: int, canary_weight: int) -> bool:
    """The route already carries exactly these weights in every rule canaryd weights."""
    return state.primary_weight == primary_weight and state.canary_weight == canary_weight


def record_weight_write(
    records: Sequence[RouteGenerations], routes: Sequence[RouteState], primary_weight: int, canary_weight: int
) -> list[RouteGenerations]:
    """``status.routeGenerations`` once these weights are written on ``routes``.

    A route the write changes goes one generation further with the same spec
    apart from the weights: its range ends one past the generation observed,
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
        changes = not weights_match(route, primary_weight, canary_weight)
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
