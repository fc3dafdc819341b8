"""Reading and weighting the app team's HTTPRoutes and GRPCRoutes.

The route belongs to the application team: canaryd changes exactly two
``weight`` fields in it and nothing else. Before any traffic moves, a route
is checked against the routing contract (it exists, every rule that names one
of canaryd's Services names both, every parent has Accepted it) and what is
wrong is said in words a person can act on. The weight change itself is a JSON
Patch guarded by ``test`` operations on the route's resourceVersion and on each
backendRef name, so that a concurrent edit by anyone makes the patch fail
instead of being overwritten.
"""

from __future__ import annotations

from typing import Any

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


def _acceptance_problem(route: dict[str, Any], label: str, own_generations: frozenset[int]) -> str:
    """Why the route's parents do not (yet) carry it, or "" when every parent accepted it.

    An Accepted condition for an older generation still counts when every
    generation since was made by canaryd's own weight-only patches: changing
    two weights cannot make a route unacceptable, and waiting for the Gateway to
    catch up after each step would cost a status write and a false alarm.
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
                and not all(g in own_generations for g in range(observed + 1, generation + 1))
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


def inspect_route(
    kind: str,
    name: str,
    route: dict[str, Any] | None,
    primary_service: str,
    canary_service: str,
    own_generations: frozenset[int] = frozenset(),
) -> RouteState:
    """Check one referenced route against the routing contract canaryd relies on.

    ``own_generations`` are generations of this route that canaryd's own
    weight patches produced (see ``_acceptance_problem``).
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
    acceptance = _acceptance_problem(route, label, own_generations)
    return RouteState(
        kind=kind,
        name=name,
        exists=True,
        has_backends=has_backends,
        accepted=not acceptance,
        problem=problem or acceptance,
        primary_weight=next(iter(primary_weights)) if len(primary_weights) == 1 else None,
        canary_weight=next(iter(canary_weights)) if len(canary_weights) == 1 else None,
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
