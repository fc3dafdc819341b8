"""The workloads canaryd owns, built as manifests from the app team's Deployment.

canaryd keeps ``<target>-primary`` (the stable revision) beside the target
Deployment (which becomes the canary), and two Services that tell them apart:
``<target>-primary`` and ``<target>-canary``. Everything here is a pure
function of the target and the Canary, so what canaryd creates can be checked
field by field without a cluster. Selectors are rewritten so that the primary's
pods are never picked by the target's selector and the other way round.

Pods say which side they are on with ``canaryd.io/role``: ``primary`` on the
primary's template, ``canary`` on the target's, added when canaryd scales the
target up from 0 for a run (so no running pod restarts for it). The label is
canaryd's bookkeeping and is not part of a revision (see ``core.revision``).
"""

from __future__ import annotations

from typing import Any

from canaryd.api.constants import (
    API_VERSION,
    CANARY_KIND,
    LABEL_CANARY,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    MANAGER_NAME,
    ROLE_CANARY,
    ROLE_PRIMARY,
)
from canaryd.api.models import Canary
from canaryd.api.naming import workload_names
from canaryd.core.json_values import clone
from canaryd.core.observations import WorkloadState
from canaryd.core.revision import REVISION_ANNOTATION, deployment_template_hash, primary_revision


def owner_reference(canary: Canary) -> dict[str, Any]:
    """An ownerReference that makes the Canary the controller of what canaryd creates."""
    return {
        "apiVersion": API_VERSION,
        "kind": CANARY_KIND,
        "name": canary.metadata.name,
        "uid": canary.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _managed_labels(canary: Canary) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGER_NAME, LABEL_CANARY: canary.metadata.name}


def target_selector(target: dict[str, Any]) -> dict[str, str]:
    """The target's ``spec.selector.matchLabels`` (empty when it has none)."""
    selector = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {str(k): str(v) for k, v in selector.items()}


def primary_selector(target: dict[str, Any]) -> dict[str, str]:
    """The target's selector with every value renamed to ``<target>-primary``."""
    name = workload_names(str((target.get("metadata") or {}).get("name", ""))).primary
    return dict.fromkeys(target_selector(target), name)


def target_problem(target: dict[str, Any]) -> str:
    """Why a target Deployment cannot be progressed, or "" when it can."""
    name = (target.get("metadata") or {}).get("name", "")
    if not target_selector(target):
        return (
            f"Deployment {name} has no spec.selector.matchLabels; canaryd needs label selectors to split pods"
        )
    template = (target.get("spec") or {}).get("template")
    if not isinstance(template, dict) or not ((template.get("spec") or {}).get("containers")):
        return f"Deployment {name} has no pod template with containers"
    labels = ((template.get("metadata") or {}).get("labels")) or {}
    missing = [k for k, v in target_selector(target).items() if labels.get(k) != v]
    if missing:
        return f"Deployment {name}: pod template labels do not match its selector ({', '.join(missing)})"
    return ""


def primary_template(target: dict[str, Any]) -> dict[str, Any]:
    """The target's pod template with its selector labels pointing at the primary."""
    template = clone((target.get("spec") or {}).get("template") or {})
    metadata = template.setdefault("metadata", {})
    labels = dict(metadata.get("labels") or {})
    labels.update(primary_selector(target))
    labels[LABEL_ROLE] = ROLE_PRIMARY
    metadata["labels"] = labels
    metadata.pop("creationTimestamp", None)
    return template


def scale_patch(target: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The merge patch that scales the target; scaling up from 0 also labels its pods as the canary."""
    patch: dict[str, Any] = {"spec": {"replicas": replicas}}
    spec = target.get("spec") or {}
    current = spec.get("replicas")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if replicas > 0 and current == 0 and labels.get(LABEL_ROLE) != ROLE_CANARY:
        patch["spec"]["template"] = {"metadata": {"labels": {LABEL_ROLE: ROLE_CANARY}}}
    return patch


def target_replicas(target: dict[str, Any]) -> int:
    replicas = (target.get("spec") or {}).get("replicas")
    return int(replicas) if isinstance(replicas, int) else 1


def primary_deployment(target: dict[str, Any], canary: Canary, replicas: int | None = None) -> dict[str, Any]:
    """``<target>-primary``: the target's spec with rewritten selectors, owned by the Canary."""
    meta = target.get("metadata") or {}
    name = str(meta.get("name", ""))
    spec = clone(target.get("spec") or {})
    spec.pop("paused", None)
    spec["replicas"] = target_replicas(target) if replicas is None else replicas
    spec["selector"] = {"matchLabels": primary_selector(target)}
    spec["template"] = primary_template(target)
    labels = dict(meta.get("labels") or {})
    labels.update(_managed_labels(canary))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": workload_names(name).primary,
            "namespace": canary.metadata.namespace,
            "labels": labels,
            "annotations": {REVISION_ANNOTATION: deployment_template_hash(target)},
            "ownerReferences": [owner_reference(canary)],
        },
        "spec": spec,
    }


def primary_template_patch(target: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON Patch that puts the target's current template (and its revision) onto the primary."""
    return [
        {"op": "replace", "path": "/spec/template", "value": primary_template(target)},
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {REVISION_ANNOTATION: deployment_template_hash(target)},
        },
    ]


def _service(canary: Canary, name: str, selector: dict[str, str]) -> dict[str, Any]:
    svc = canary.spec.service
    port: dict[str, Any] = {
        "name": svc.port_name,
        "port": svc.port,
        "targetPort": svc.target_port if svc.target_port is not None else svc.port,
        "protocol": "TCP",
    }
    if svc.app_protocol:
        port["appProtocol"] = svc.app_protocol
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": canary.metadata.namespace,
            "labels": _managed_labels(canary),
            "ownerReferences": [owner_reference(canary)],
        },
        "spec": {"type": "ClusterIP", "selector": selector, "ports": [port]},
    }


def services(target: dict[str, Any], canary: Canary) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``-primary`` Service (selecting the primary's pods) and the ``-canary`` one (the target's)."""
    names = workload_names(canary.spec.target_ref.name)
    return (
        _service(canary, names.primary, primary_selector(target)),
        _service(canary, names.canary_service, target_selector(target)),
    )


def service_matches(actual: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """The Service exists with the selector and port canaryd needs."""
    if not actual:
        return False
    spec = actual.get("spec") or {}
    if (spec.get("selector") or {}) != wanted["spec"]["selector"]:
        return False
    want_port = wanted["spec"]["ports"][0]
    return any(
        p.get("port") == want_port["port"] and p.get("targetPort", p.get("port")) == want_port["targetPort"]
        for p in spec.get("ports") or []
    )


def service_patch(wanted: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that repairs a Service's selector and ports."""
    return {"spec": {"selector": wanted["spec"]["selector"], "ports": wanted["spec"]["ports"]}}


def managing_canary(deployment: dict[str, Any]) -> str:
    """The Canary that made this Deployment its primary (ownerReference, else canaryd's labels), or "".

    The labels stay when a deleted Canary releases its primary (the app team's
    routes still send traffic to it), so they still say whose it was.
    """
    meta = deployment.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if (
            isinstance(ref, dict)
            and ref.get("kind") == CANARY_KIND
            and str(ref.get("apiVersion", "")).split("/")[0] == API_VERSION.split("/")[0]
        ):
            return str(ref.get("name") or "a Canary")
    labels = meta.get("labels") or {}
    if isinstance(labels, dict) and labels.get(LABEL_MANAGED_BY) == MANAGER_NAME and labels.get(LABEL_CANARY):
        return str(labels[LABEL_CANARY])
    return ""


def workload_state(deployment: dict[str, Any], *, primary: bool = False) -> WorkloadState:
    """A Deployment as the lifecycle sees it; the primary's revision comes from canaryd's annotation."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = spec.get("replicas")

    def count(key: str) -> int:
        value = status.get(key)
        return int(value) if isinstance(value, int) else 0

    return WorkloadState(
        name=str(meta.get("name", "")),
        template_hash=primary_revision(deployment) if primary else deployment_template_hash(deployment),
        desired_replicas=int(replicas) if isinstance(replicas, int) else 1,
        ready_replicas=count("readyReplicas"),
        updated_replicas=count("updatedReplicas"),
        available_replicas=count("availableReplicas"),
        generation=int(meta.get("generation") or 0),
        observed_generation=count("observedGeneration"),
        managed_by=managing_canary(deployment),
    )
