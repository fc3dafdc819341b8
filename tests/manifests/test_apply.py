"""The install applies to the sandbox as the README says: `kubectl apply -k manifests/default`.

One command, CRDs and the rest together, with kubectl's default (server-side)
field validation: the sandbox serves every kind the install holds
(ServiceAccount, the RBAC kinds, PodDisruptionBudget, NetworkPolicy) as a real
server does. Then it is read back: every object exists as rendered, a second
apply changes nothing, and the CRDs are served (a Canary from the samples is
accepted and listed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.fixtures.sandbox import Kubectl
from tests.manifests.rendering import MANIFESTS, render


def _stored_spec(server: SandboxApiServer, obj: dict[str, Any]) -> Any:
    meta = obj["metadata"]
    stored = server.store.get(obj["kind"], meta["name"], namespace=meta.get("namespace"))
    return {key: value for key, value in stored.items() if key not in {"metadata", "status"}}


async def test_kubectl_apply_k_manifests_default_installs_everything(
    sandbox_api: SandboxApiServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    objects = render(MANIFESTS / "default")
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]

    applied = await kubectl("apply", "-k", str(MANIFESTS / "default"), check=True)
    assert applied.stdout.count("created") == len(objects), applied.stdout
    assert "Warning" not in applied.stderr, applied.stderr

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
    again = await kubectl("apply", "-k", str(MANIFESTS / "default"), check=True)
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
    await kubectl("apply", "-f", str(tmp_path / "canary.yaml"), check=True)
    listed = await kubectl("get", "canaries", "-A", check=True)
    assert canaries[0]["metadata"]["name"] in listed.stdout
