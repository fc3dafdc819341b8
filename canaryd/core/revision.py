"""The identity of a revision: a stable hash of a Deployment's pod template.

canaryd starts a run when the target's pod template changes and must not start
one when nothing a person changed has changed. The hash is taken over a
canonical form of ``spec.template`` that leaves out what canaryd itself writes
(its own annotations and labels) and what the API server fills in without meaning
(``creationTimestamp: null``), so that reading the same Deployment twice, or
after canaryd has touched it, always gives the same revision.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Annotations and labels with this prefix are canaryd's bookkeeping, not part of a revision.
CANARYD_ANNOTATION_PREFIX = "canaryd.io/"
#: Annotation on ``<target>-primary`` naming the revision it runs.
REVISION_ANNOTATION = "canaryd.io/revision"
HASH_LENGTH = 10


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def canonical_template(template: dict[str, Any]) -> dict[str, Any]:
    """``spec.template`` with canaryd's own marks and meaningless server defaults removed."""
    cleaned: dict[str, Any] = _without_nulls(template) if isinstance(template, dict) else {}
    if not isinstance(cleaned.get("metadata") or {}, dict):
        return cleaned  # not an object (the API server would refuse it): nothing of canaryd's to take out
    metadata = dict(cleaned.get("metadata") or {})
    metadata.pop("creationTimestamp", None)
    given = metadata.get("annotations") or {}
    annotations = (
        {k: v for k, v in given.items() if not k.startswith(CANARYD_ANNOTATION_PREFIX)}
        if isinstance(given, dict)
        else given
    )
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    labels = {
        k: v for k, v in (metadata.get("labels") or {}).items() if not k.startswith(CANARYD_ANNOTATION_PREFIX)
    }
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    if metadata:
        cleaned["metadata"] = metadata
    else:
        cleaned.pop("metadata", None)
    return cleaned


def template_hash(template: dict[str, Any]) -> str:
    """A short, stable hash of a pod template: equal templates give equal hashes, in any key order."""
    text = json.dumps(canonical_template(template), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def deployment_template_hash(deployment: dict[str, Any]) -> str:
    """The revision of a Deployment the app team owns (the target)."""
    spec = deployment.get("spec") or {}
    template = spec.get("template") if isinstance(spec, dict) else None
    return template_hash(template if isinstance(template, dict) else {})


def primary_revision(primary: dict[str, Any]) -> str:
    """The revision ``<target>-primary`` runs, as canaryd recorded it when it wrote the template."""
    annotations = (primary.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(REVISION_ANNOTATION, "")
    return value if isinstance(value, str) else ""
