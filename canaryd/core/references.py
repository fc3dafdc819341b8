"""What a Canary depends on, so that a change to any of those objects makes canaryd look at it again.

The controller keeps one index from each referenced object to the Canaries
that name it: the target Deployment, ``<target>-primary`` and both Services,
the routes in ``routeRefs`` and the MetricTemplates of its metrics. It is read
leniently from the raw object, because a Canary that does not parse must still
be looked at again when what it names appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canaryd.api.naming import workload_names

#: An object by (kind, namespace, name).
Reference = tuple[str, str, str]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def references(canary: Mapping[str, Any]) -> set[Reference]:
    """The objects this Canary (as stored, possibly malformed) reads."""
    namespace = str(_mapping(canary.get("metadata")).get("namespace", ""))
    spec = _mapping(canary.get("spec"))
    refs: set[Reference] = set()
    target = _mapping(spec.get("targetRef")).get("name")
    if isinstance(target, str) and target:
        names = workload_names(target)
        refs |= {
            ("Deployment", namespace, target),
            ("Deployment", namespace, names.primary),
            ("Service", namespace, names.primary),
            ("Service", namespace, names.canary_service),
        }
    route_refs = spec.get("routeRefs")
    for ref in route_refs if isinstance(route_refs, list) else []:
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            refs.add((str(ref.get("kind", "HTTPRoute")), namespace, ref["name"]))
    metrics = _mapping(spec.get("analysis")).get("metrics")
    for metric in metrics if isinstance(metrics, list) else []:
        template = _mapping(metric).get("templateRef")
        if isinstance(template, dict) and isinstance(template.get("name"), str):
            refs.add(("MetricTemplate", str(template.get("namespace") or namespace), template["name"]))
    return refs
