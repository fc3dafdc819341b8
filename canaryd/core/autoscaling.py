"""The primary's copy of the HorizontalPodAutoscaler that scales the target.

An app team that autoscales its Deployment keeps its HPA pointed at that
Deployment; canaryd's ``<target>-primary`` serves the traffic between runs,
so it needs the same autoscaling. canaryd copies the team's HPA (the first by
name when several name the target) to ``<hpa>-primary``, with
``scaleTargetRef`` renamed to ``<target>-primary``, owned by the Canary, and
puts the copy back in step whenever the team's HPA changes or someone edits
the copy; when the team's HPA goes, so does the copy. The team's HPA goes on
scaling the target: the HPA controller leaves a Deployment at 0 replicas alone
(``ScalingActive=False``, ScalingDisabled), so between runs it does nothing,
and during a run it scales the canary from the count canaryd gives it.

All of it is pure: what the copy is, whether the one in the cluster is it.
"""

from __future__ import annotations

from typing import Any

from canaryd.api.constants import LABEL_CANARY, LABEL_MANAGED_BY, MANAGER_NAME
from canaryd.api.models import Canary
from canaryd.api.naming import workload_names
from canaryd.core.json_values import clone
from canaryd.core.workloads import owner_reference

#: On the copy: the HPA it was made from.
SOURCE_ANNOTATION = "canaryd.io/autoscaler-source"
AUTOSCALER_API_VERSION = "autoscaling/v2"


def scale_target(hpa: dict[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) an HPA scales, when it names a Deployment (apps/*) at all."""
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if not isinstance(ref, dict) or ref.get("kind") != "Deployment":
        return None
    api_version = str(ref.get("apiVersion") or "apps/v1")
    name = ref.get("name")
    if not api_version.startswith("apps/") or not isinstance(name, str) or not name:
        return None
    return ("Deployment", name)


def mirror_name(source: str) -> str:
    return f"{source}-primary"


def source_autoscaler(hpas: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The HPA to copy among those that scale the target: the first by name."""
    named = [h for h in hpas if (h.get("metadata") or {}).get("name")]
    return min(named, key=lambda h: str(h["metadata"]["name"])) if named else None


def primary_autoscaler(source: dict[str, Any], canary: Canary) -> dict[str, Any]:
    """``<source>-primary``: the source's spec scaling ``<target>-primary``, owned by the Canary."""
    meta = source.get("metadata") or {}
    name = str(meta.get("name", ""))
    spec = clone(source.get("spec") or {})
    ref = dict(spec.get("scaleTargetRef") or {})
    ref.update(
        {
            "apiVersion": ref.get("apiVersion") or "apps/v1",
            "kind": "Deployment",
            "name": workload_names(canary.spec.target_ref.name).primary,
        }
    )
    spec["scaleTargetRef"] = ref
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update({LABEL_MANAGED_BY: MANAGER_NAME, LABEL_CANARY: canary.metadata.name})
    return {
        "apiVersion": AUTOSCALER_API_VERSION,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": mirror_name(name),
            "namespace": canary.metadata.namespace,
            "labels": labels,
            "annotations": {SOURCE_ANNOTATION: name},
            "ownerReferences": [owner_reference(canary)],
        },
        "spec": spec,
    }


def in_step(actual: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """The copy in the cluster has the spec it should have."""
    return actual is not None and (actual.get("spec") or {}) == wanted["spec"]


def spec_patch(wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON Patch that puts the wanted spec on an existing copy (fields the source dropped go too)."""
    return [{"op": "replace", "path": "/spec", "value": wanted["spec"]}]


def copy_of(hpa: dict[str, Any]) -> str | None:
    """The source an HPA was copied from by canaryd, when it is such a copy."""
    annotations = (hpa.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(SOURCE_ANNOTATION)
    return value if isinstance(value, str) and value else None
