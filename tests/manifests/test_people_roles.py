"""The roles for people do what the README says: view reads, operate steers, neither edits a Canary.

`kubectl canary` runs against the sandbox as users whose rights are exactly the
rendered `canaryd-view` or `canaryd-operate` rules (the sandbox API server
enforces them): an operator can abort a rollout, which writes only the
Canary's status subresource; a viewer can list but not abort; and neither can
change a Canary's spec.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp

from canaryd.api.constants import API_VERSION
from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.manifests.rendering import MANIFESTS, render

NAMESPACE = "shop"
EXIT_FORBIDDEN = 5  # canaryctl's documented exit code for "no rights"


def _rules(role_name: str) -> list[str]:
    (role,) = [
        o
        for o in render(MANIFESTS / "rbac")
        if (o["kind"], o["metadata"]["name"]) == ("ClusterRole", role_name)
    ]
    return sorted(
        {
            f"{verb} {resource}"
            for rule in role["rules"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    )


def _canary() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Canary",
        "metadata": {"name": "storefront", "namespace": NAMESPACE},
        "spec": {
            "targetRef": {"name": "storefront"},
            "service": {"port": 8080},
            "routeRefs": [{"name": "storefront"}],
            "analysis": {"stepWeights": [50]},
        },
    }


async def _canaryctl(kubeconfig: Path, *args: str) -> tuple[int, str]:
    """Run canaryctl without blocking the event loop the sandbox API server answers on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from canaryd.cli.canaryctl import main; sys.exit(main())",
        "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


async def test_operate_steers_view_reads_and_neither_edits_a_canary(
    sandbox_api: SandboxApiServer, tmp_path: Path
) -> None:
    store = sandbox_api.store
    for crd in (o for o in render(MANIFESTS / "crd") if o["kind"] == "CustomResourceDefinition"):
        store.create("customresourcedefinitions", crd)
    store.ensure_namespace(NAMESPACE)
    store.create("canaries", _canary(), namespace=NAMESPACE)
    sandbox_api.add_user("operate-token", "on-call", _rules("canaryd-operate"))
    sandbox_api.add_user("view-token", "auditor", _rules("canaryd-view"))
    operator = sandbox_api.write_kubeconfig(tmp_path / "operator", token="operate-token", namespace=NAMESPACE)
    viewer = sandbox_api.write_kubeconfig(tmp_path / "viewer", token="view-token", namespace=NAMESPACE)

    code, output = await _canaryctl(viewer, "list")
    assert code == 0, output
    assert "storefront" in output

    code, output = await _canaryctl(viewer, "abort", "storefront", "--no-wait")
    assert code == EXIT_FORBIDDEN, output
    assert "requestedAction" not in (
        store.get("canaries", "storefront", namespace=NAMESPACE).get("status") or {}
    )

    code, output = await _canaryctl(operator, "abort", "storefront", "--no-wait")
    assert code == 0, output
    status = store.get("canaries", "storefront", namespace=NAMESPACE)["status"]
    assert status["requestedAction"]["action"] == "abort"

    path = f"/apis/canaryd.io/v1alpha1/namespaces/{NAMESPACE}/canaries/storefront"
    spec_change = {"spec": {"analysis": {"stepWeights": [10, 50]}}}
    async with aiohttp.ClientSession(base_url=sandbox_api.url) as session:
        for token in ("operate-token", "view-token"):
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
            async with session.patch(path, json=spec_change, headers=headers, ssl=False) as response:
                assert response.status == 403, f"{token} may change a Canary's spec"
    assert store.get("canaries", "storefront", namespace=NAMESPACE)["spec"]["analysis"]["stepWeights"] == [50]
