"""What the install's RBAC grants, and how it compares with what a controller run actually asked for.

Shared by the RBAC tests on both backends: the sandbox (whose audit log lists each request) and the
real kube-apiserver (whose audit log, at Metadata level, names verb, API group, resource and
subresource exactly as RBAC authorizes them). A grant is (apiGroup, resource[/subresource], verb);
the rendered ClusterRole canaryd-manager and Role canaryd-leader-election are expanded into grants,
and the grants a run used must equal them: none missing (a 403 stalls the controller), none unused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

INSTALL_NAMESPACE = "canaryd-system"
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{INSTALL_NAMESPACE}:canaryd"

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def granted(objects: list[dict[str, Any]]) -> tuple[set[Grant], set[Grant]]:
    """(grants of ClusterRole canaryd-manager, grants of Role canaryd-leader-election in its namespace)."""

    def expand(role: dict[str, Any]) -> set[Grant]:
        grants: set[Grant] = set()
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], (
                f"wildcard in {role['metadata']}"
            )
            grants |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        return grants

    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    cluster = expand(by_name[("ClusterRole", "canaryd-manager")])
    lease_role = by_name[("Role", "canaryd-leader-election")]
    assert lease_role["metadata"]["namespace"] == INSTALL_NAMESPACE
    return cluster, expand(lease_role)


def differences(
    used: Iterable[tuple[Grant, str | None]], cluster_grants: set[Grant], lease_grants: set[Grant]
) -> list[str]:
    """Why the grants used (each with the namespace of its request) differ from those granted; [] if not.

    Leases are the Role's, and must be used in the install namespace only; everything else is the
    ClusterRole's. Both ways: a grant used but not granted, and one granted but never used.
    """
    problems: list[str] = []
    used_set: set[Grant] = set()
    for grant, namespace in used:
        used_set.add(grant)
        if grant[1] == "leases" and namespace != INSTALL_NAMESPACE:
            problems.append(f"a Lease request outside {INSTALL_NAMESPACE}: {grant} in {namespace}")
    lease_used = {g for g in used_set if g[1] == "leases"}
    cluster_used = used_set - lease_used
    for role, wanted, got in (
        ("Role canaryd-leader-election", lease_grants, lease_used),
        ("ClusterRole canaryd-manager", cluster_grants, cluster_used),
    ):
        if got - wanted:
            problems.append(f"{role}: used but not granted {sorted(got - wanted)}")
        if wanted - got:
            problems.append(f"{role}: granted but unused {sorted(wanted - got)}")
    return problems
