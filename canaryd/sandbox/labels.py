"""Label requirements and structured LabelSelectors, shared by the sandbox's server and its simulators.

The API server filters lists and watches by ``?labelSelector=`` (parsed into
these requirements in ``server.selectors``) and checks that a Deployment's
selector picks its own template; the simulators find which Deployments a
Service selects and which namespaces a Gateway listener admits. Both must
agree with Kubernetes, and with each other, on what a selector matches, so the
matching lives here once, outside either part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector: ``key`` compared by ``operator`` with ``values``."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        return False


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


_EXPRESSION_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def matches_label_selector(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Evaluate a structured LabelSelector (matchLabels + matchExpressions) against labels.

    An empty selector matches everything, a missing (None) one matches nothing, as for Deployments.
    """
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        operator = _EXPRESSION_OPERATORS.get(expression.get("operator", ""))
        if operator is None:
            return False
        requirement = Requirement(
            expression.get("key", ""), operator, frozenset(expression.get("values") or ())
        )
        if not requirement.matches(labels):
            return False
    return True
