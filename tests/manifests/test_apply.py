"""The rendered install applies cleanly with kubectl, as `kubectl apply -k manifests/default` would.

It is applied to the sandbox API server with the real kubectl, CRDs first
(as an install script or Argo CD sync wave does), and then read back: the
CRDs are served (a Canary from the samples can be created), and every object
of the install exists as rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.resources import ResourceType
from tests.fixtures.sandbox import Kubectl
from tests.manifests.rendering import MANIFESTS, render

#: Kinds of the install that the sandbox stores without acting on them (it has no RBAC
#: authorizer, no service-account tokens, no evictions and no pod network). Registered only
#: when the sandbox lacks them.
INSTALL_ONLY_KINDS = (
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",),
                 tracks_generation=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole",
                 tracks_generation=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False,
                 "clusterrolebinding", tracks_generation=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role", tracks_generation=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding",
                 tracks_generation=False),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "poddisruptionbudget",
                 ("pdb",), strategic_merge=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy",
                 ("netpol",), strategic_merge=True),
)  # fmt: skip


def _serve_install_kinds(server: SandboxApiServer) -> None:
    registry = server.store.registry
    for resource_type in INSTALL_ONLY_KINDS:
        if registry.get(resource_type.group, resource_type.version, resource_type.plural) is None:
            registry.add(resource_type)


def _stored_spec(server: SandboxApiServer, obj: dict[str, Any]) -> Any:
    meta = obj["metadata"]
    stored = server.store.get(obj["kind"], meta["name"], namespace=meta.get("namespace"))
    return {key: value for key, value in stored.items() if key not in {"metadata", "status"}}


async def test_rendered_install_applies_cleanly_crds_first(
    sandbox_api: SandboxApiServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    _serve_install_kinds(sandbox_api)
    objects = render(MANIFESTS / "default")
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    (tmp_path / "crds.yaml").write_text(yaml.safe_dump_all(crds))
    (tmp_path / "install.yaml").write_text(yaml.safe_dump_all(rest))

    applied = await kubectl("apply", "--validate=false", "-f", str(tmp_path / "crds.yaml"), check=True)
    assert applied.stdout.count("created") == len(crds), applied.stdout
    applied = await kubectl("apply", "--validate=false", "-f", str(tmp_path / "install.yaml"), check=True)
    assert applied.stdout.count("created") == len(rest), applied.stdout

    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        stored = sandbox_api.store.get(kind, meta["name"], namespace=meta.get("namespace"))
        assert stored["metadata"]["name"] == meta["name"]
        if "spec" in obj:
            for key in obj["spec"]:
                assert key in stored["spec"], f"{kind}/{meta['name']}: spec.{key} was lost"

    # Applying again changes nothing: the install is idempotent. kubectl always sends the
    # PodDisruptionBudget's selector (its patch strategy is "replace") and so reports it
    # "configured" on every apply, on a real cluster too; its stored spec stays the same.
    before = {(o["kind"], o["metadata"]["name"]): _stored_spec(sandbox_api, o) for o in rest}
    again = await kubectl("apply", "--validate=false", "-f", str(tmp_path / "install.yaml"), check=True)
    changed = [line for line in again.stdout.splitlines() if not line.endswith(" unchanged")]
    assert changed == ["poddisruptionbudget.policy/canaryd configured"], again.stdout
    after = {(o["kind"], o["metadata"]["name"]): _stored_spec(sandbox_api, o) for o in rest}
    assert after == before

    # The CRDs are served: the sample Canary is accepted, and `kubectl get canaries` lists it.
    samples = sorted((MANIFESTS / "samples").glob("*.yaml"))
    canaries = [
        doc
        for path in samples
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "Canary"
    ]
    assert canaries, "manifests/samples holds a Canary"
    namespace = canaries[0]["metadata"].get("namespace", "default")
    namespace_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    (tmp_path / "canary.yaml").write_text(yaml.safe_dump_all([namespace_doc, canaries[0]]))
    await kubectl("apply", "--validate=false", "-f", str(tmp_path / "canary.yaml"), check=True)
    listed = await kubectl("get", "canaries", "-A", check=True)
    assert canaries[0]["metadata"]["name"] in listed.stdout
