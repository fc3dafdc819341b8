"""The manifests canaryd ships inside its package, so an installed canaryd has them without a checkout.

One copy of each, used by everyone: `canaryd demo` applies ``crd/``,
``analysis/sandbox.yaml`` and ``demo/sandbox-app.yaml`` from here, and the
repository's ``manifests/crd``, ``manifests/samples``, ``analysis`` and
``docs/sandbox-app.yaml`` are links to these directories and files, so
``kubectl apply -k manifests/default`` and ``kubectl apply -f analysis/...``
read the same bytes the wheel carries.

- ``crd/``: the CustomResourceDefinitions (a kustomization, included by manifests/default);
- ``samples/``: a production-like example (a kustomization);
- ``analysis/``: MetricTemplates for common data planes, one file each;
- ``demo/sandbox-app.yaml``: the application `canaryd demo` rolls out on the sandbox.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml

KUSTOMIZATION = "kustomization.yaml"


def path(*parts: str) -> Traversable:
    """A file or directory of the shipped manifests, e.g. ``path("analysis", "sandbox.yaml")``."""
    found = files(__name__)
    for part in parts:
        found = found / part
    return found


def documents(*parts: str) -> list[dict[str, Any]]:
    """The objects in one shipped file, or in every manifest of a directory (name order, no kustomization)."""
    where = path(*parts)
    if where.is_dir():
        manifests = [e for e in where.iterdir() if e.name.endswith(".yaml") and e.name != KUSTOMIZATION]
        sources = sorted(manifests, key=lambda entry: entry.name)
    else:
        sources = [where]
    return [
        document
        for source in sources
        for document in yaml.safe_load_all(source.read_text(encoding="utf-8"))
        if isinstance(document, dict)
    ]
