"""The kinds the sandbox API server serves, built in and added by CRDs.

A resource type is what discovery advertises and what URL paths resolve to:
group, version, plural, kind, scope, subresources and printer columns. The
built-in list covers what canaryd, its install and its users touch on a real
cluster (namespaces, services, deployments, events, leases, secrets,
configmaps, CRDs; pods, replicasets, endpointslices and endpoints, which the
simulators write; serviceaccounts, the RBAC kinds, poddisruptionbudgets,
networkpolicies and admission policies, stored but not enforced); a
CustomResourceDefinition written to the store adds its served versions here,
and deleting it removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrinterColumn:
    """One column of `kubectl get` output: a JSONPath over the object (as in additionalPrinterColumns)."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    has_scale: bool = False
    #: metadata.generation is kept (objects with a spec); configmaps, secrets, events and leases have none.
    tracks_generation: bool = True
    #: strategic merge patch is accepted (built-in kinds only, like the real server).
    strategic_merge: bool = False
    #: openAPIV3Schema of a CRD version (None for built-ins).
    schema: dict[str, Any] | None = None
    printer_columns: tuple[PrinterColumn, ...] = ()
    #: the CRD this type comes from (None for built-ins).
    crd_name: str | None = None
    #: selectable fields beyond metadata.name/namespace (field selectors on list and watch).
    selectable_fields: tuple[str, ...] = field(default=())
    #: the group whose objects this type shows (events.k8s.io Events are core Events); None: its own.
    storage_group: str | None = None

    @property
    def is_custom(self) -> bool:
        """Behaves as a custom resource: no strategic merge patch, no unconditional updates."""
        return self.crd_name is not None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are stored per group and plural; every served version sees the same objects."""
        return (self.group if self.storage_group is None else self.storage_group, self.plural)

    @property
    def qualified(self) -> str:
        """`plural.group` as kubectl and error messages spell it (`plural` for the core group)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def verbs(self) -> list[str]:
        return ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


# Field selectors the real server supports on events (the events.k8s.io view names them regarding.*).
_CORE_EVENT_FIELDS = (
    *(
        f"involvedObject.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    ),
    "reason",
    "reportingComponent",
    "source",
    "type",
)

_RBAC = "rbac.authorization.k8s.io"
_ADMISSION = "admissionregistration.k8s.io"

# What the simulators write (Pods, ReplicaSets, EndpointSlices, Endpoints: see canaryd.sandbox.sim) and
# what an install holds that only a real cluster acts on (ServiceAccounts, RBAC, disruption budgets,
# network policies, admission policies): stored, defaulted as the real server defaults them, never enforced.
_STORED_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "pods", "Pod", True, "pod", ("po",), ("all",), has_status=True,
                 strategic_merge=True),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, "replicaset", ("rs",), ("all",),
                 has_status=True, has_scale=True, strategic_merge=True),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, "endpointslice",
                 strategic_merge=True),
    ResourceType("", "v1", "endpoints", "Endpoints", True, "endpoints", ("ep",), tracks_generation=False,
                 strategic_merge=True),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",),
                 tracks_generation=False, strategic_merge=True),
    ResourceType(_RBAC, "v1", "clusterroles", "ClusterRole", False, "clusterrole",
                 tracks_generation=False, strategic_merge=True),
    ResourceType(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False, "clusterrolebinding",
                 tracks_generation=False, strategic_merge=True),
    ResourceType(_RBAC, "v1", "roles", "Role", True, "role", tracks_generation=False, strategic_merge=True),
    ResourceType(_RBAC, "v1", "rolebindings", "RoleBinding", True, "rolebinding", tracks_generation=False,
                 strategic_merge=True),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "poddisruptionbudget",
                 ("pdb",), has_status=True, strategic_merge=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy",
                 ("netpol",), strategic_merge=True),
    ResourceType(_ADMISSION, "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False,
                 "validatingadmissionpolicy", has_status=True, strategic_merge=True),
    ResourceType(_ADMISSION, "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding",
                 False, "validatingadmissionpolicybinding", strategic_merge=True),
)  # fmt: skip

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        "namespace",
        ("ns",),
        has_status=True,
        tracks_generation=False,
        strategic_merge=True,
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        True,
        "service",
        ("svc",),
        ("all",),
        has_status=True,
        tracks_generation=False,
        strategic_merge=True,
    ),
    ResourceType(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        True,
        "configmap",
        ("cm",),
        tracks_generation=False,
        strategic_merge=True,
    ),
    ResourceType(
        "", "v1", "secrets", "Secret", True, "secret", (), tracks_generation=False, strategic_merge=True
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        True,
        "event",
        ("ev",),
        tracks_generation=False,
        strategic_merge=True,
        selectable_fields=_CORE_EVENT_FIELDS,
    ),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        "deployment",
        ("deploy",),
        ("all",),
        has_status=True,
        has_scale=True,
        strategic_merge=True,
    ),
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        "event",
        ("ev",),
        tracks_generation=False,
        strategic_merge=True,
        selectable_fields=tuple(f.replace("involvedObject.", "regarding.") for f in _CORE_EVENT_FIELDS),
        storage_group="",
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        True,
        "lease",
        (),
        tracks_generation=False,
        strategic_merge=True,
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "customresourcedefinition",
        ("crd", "crds"),
        has_status=True,
        strategic_merge=True,
    ),
    *_STORED_TYPES,
)

#: The version each group prefers (listed first in discovery).
_PREFERRED = {
    "": "v1",
    "apps": "v1",
    "events.k8s.io": "v1",
    "coordination.k8s.io": "v1",
    "apiextensions.k8s.io": "v1",
    "discovery.k8s.io": "v1",
    _RBAC: "v1",
    "policy": "v1",
    "networking.k8s.io": "v1",
    _ADMISSION: "v1",
}


class ResourceRegistry:
    """Served resource types, looked up by URL parts or by the names people type."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._resolved: dict[str, ResourceType] = {}
        self._preferred_version: dict[str, str] = dict(_PREFERRED)
        for resource_type in BUILTIN_TYPES:
            self.add(resource_type)

    def add(self, resource_type: ResourceType) -> None:
        self._types[(resource_type.group, resource_type.version, resource_type.plural)] = resource_type
        self._resolved.clear()

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        removed = [t for t in self._types.values() if t.crd_name == crd_name]
        for resource_type in removed:
            del self._types[(resource_type.group, resource_type.version, resource_type.plural)]
        self._resolved.clear()
        return removed

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        """Group -> served versions, preferred version first."""
        result: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            versions = result.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        for group, versions in result.items():
            preferred = self.preferred_version(group, versions)
            versions.sort(key=lambda v: (v != preferred, _version_order(v)))
        return result

    def preferred_version(self, group: str, versions: list[str] | None = None) -> str:
        versions = versions if versions is not None else [v for g, v, _ in self._types if g == group]
        wanted = self._preferred_version.get(group)
        if wanted in versions:
            return wanted
        return sorted(versions, key=_version_order)[0]

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for (g, v, _), t in self._types.items() if g == group and v == version]

    def resolve(self, name: str) -> ResourceType:
        """Find a type by `plural`, `plural.group`, `singular`, short name or `Kind` (preferred version).

        Raises KeyError when nothing matches. `events` means core/v1 events, like kubectl.
        """
        cached = self._resolved.get(name)
        if cached is not None:
            return cached
        self._resolved[name] = found = self._resolve(name)
        return found

    def _resolve(self, name: str) -> ResourceType:
        lowered = name.lower()
        candidates: list[ResourceType] = []
        for resource_type in self._types.values():
            names = {
                resource_type.plural,
                resource_type.singular,
                resource_type.kind.lower(),
                *resource_type.short_names,
            }
            qualified = {f"{n}.{resource_type.group}" for n in names} if resource_type.group else set()
            if (
                lowered in names
                or lowered in qualified
                or lowered == f"{resource_type.plural}.{resource_type.version}.{resource_type.group}"
            ):
                candidates.append(resource_type)
        if not candidates:
            raise KeyError(name)

        def rank(t: ResourceType) -> tuple[int, int, int]:
            exact_core = 0 if (t.group == "" or "." in lowered) else 1
            return (
                exact_core,
                0 if t.version == self.preferred_version(t.group) else 1,
                _version_order(t.version),
            )

        return sorted(candidates, key=rank)[0]


def _version_order(version: str) -> int:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first (smaller sorts first)."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return 10_000
    major = int(match.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    minor = int(match.group(3) or 0)
    return stage * 1000 - major * 10 - minor + 500


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    result: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or None
        columns = tuple(
            PrinterColumn(
                name=c.get("name", ""),
                type=c.get("type", "string"),
                json_path=c.get("jsonPath", ""),
                description=c.get("description", ""),
                priority=int(c.get("priority", 0) or 0),
                format=c.get("format", ""),
            )
            for c in version.get("additionalPrinterColumns") or []
        )
        selectable = tuple(f.get("jsonPath", "").lstrip(".") for f in version.get("selectableFields") or [])
        result.append(
            ResourceType(
                group=group,
                version=version.get("name", "v1"),
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=namespaced,
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                has_status="status" in subresources,
                has_scale=False,  # the scale subresource is served for Deployments only
                tracks_generation=True,
                strategic_merge=False,
                schema=schema,
                printer_columns=columns,
                crd_name=(crd.get("metadata") or {}).get("name"),
                selectable_fields=selectable,
            )
        )
    return result


def storage_version_of_crd(crd: dict[str, Any]) -> str | None:
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("storage"):
            return str(version.get("name"))
    return None
