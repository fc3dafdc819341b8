"""The GitOps settings in the docs ignore exactly what canaryd changes, checked with the real jq.

Argo CD removes the fields a `jqPathExpressions` entry selects from both the
live object and Git's before it compares them. Here every such expression
in docs/gitops.md and the README is run with `jq del(...)` over a route as
Git has it and as it is live: a route whose only change is canaryd's two
weights compares equal; one where a person changed a filter, or the weight
of another backendRef, does not. Flux's JSON Pointers in the docs must name
the two weights of the route they are written for.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from typing import Any

import jsonpointer
import pytest
import yaml

from tests.packaging.conftest import REPO

GITOPS = (REPO / "docs" / "gitops.md").read_text()
README = (REPO / "README.md").read_text()


def _yaml_blocks(text: str) -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def _ignore_differences(text: str) -> list[dict[str, Any]]:
    entries = []
    for block in _yaml_blocks(text):
        if isinstance(block, dict) and block.get("kind") == "Application":
            entries += block["spec"]["ignoreDifferences"]
    return entries


def _jq() -> str:
    found = shutil.which("jq")
    if found is None:
        pytest.fail("jq is missing: apt-get install -y --no-install-recommends jq", pytrace=False)
    return found


def _without(expression: str, obj: dict[str, Any]) -> Any:
    result = subprocess.run(
        [_jq(), "-c", f"del({expression})"], input=json.dumps(obj), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"jq refused {expression!r}: {result.stderr}"
    return json.loads(result.stdout)


def _route(kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "payments-api", "namespace": "payments"},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": "payments-api-primary", "port": 8080, "weight": 100},
                        {"name": "payments-api-canary", "port": 8080, "weight": 0},
                    ],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/legacy"}}],
                    "backendRefs": [
                        {"name": "payments-legacy", "port": 8080, "weight": 90},
                        {"name": "payments-api-primary", "port": 8080, "weight": 10},
                        {"name": "payments-api-canary", "port": 8080, "weight": 0},
                    ],
                },
            ],
        },
    }


def _mid_run(route: dict[str, Any]) -> dict[str, Any]:
    live = copy.deepcopy(route)
    for rule in live["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            if ref["name"].endswith("-primary"):
                ref["weight"] = 70
            elif ref["name"].endswith("-canary"):
                ref["weight"] = 30
    return live


DOCUMENTS = {"docs/gitops.md": GITOPS, "README.md": README}


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute"])
def test_route_expressions_ignore_canaryds_weights_and_nothing_else(document: str, kind: str) -> None:
    entries = [e for e in _ignore_differences(DOCUMENTS[document]) if e["kind"] == kind]
    assert entries, f"{document} has no ignoreDifferences entry for {kind}"
    (entry,) = entries
    assert entry["group"] == "gateway.networking.k8s.io"
    git = _route(kind)
    canaryd_changed = _mid_run(git)
    person_changed_filter = copy.deepcopy(canaryd_changed)
    person_changed_filter["spec"]["rules"][0]["filters"] = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
    ]
    other_weight_changed = copy.deepcopy(canaryd_changed)
    other_weight_changed["spec"]["rules"][1]["backendRefs"][0]["weight"] = 50

    for expression in entry["jqPathExpressions"]:
        assert _without(expression, canaryd_changed) == _without(expression, git)
        assert _without(expression, person_changed_filter) != _without(expression, git)
        assert _without(expression, other_weight_changed) != _without(expression, git)


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
def test_deployment_replicas_are_ignored(document: str) -> None:
    (entry,) = [e for e in _ignore_differences(DOCUMENTS[document]) if e["kind"] == "Deployment"]
    assert entry["group"] == "apps" and entry["jsonPointers"] == ["/spec/replicas"]


def test_flux_pointers_name_the_two_weights_of_the_documented_route() -> None:
    (flux,) = [b for b in _yaml_blocks(GITOPS) if isinstance(b, dict) and b.get("kind") == "Kustomization"]
    app = [doc for doc in yaml.safe_load_all((REPO / "docs" / "sandbox-app.yaml").read_text()) if doc]
    for rule in flux["spec"]["driftIgnoreRules"]:
        target = rule["target"]
        (obj,) = [o for o in app if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        if target["kind"] == "HTTPRoute":
            named = set()
            for path in rule["paths"]:
                assert path.endswith("/weight"), path
                ref = jsonpointer.resolve_pointer(obj, path.removesuffix("/weight"))
                named.add(ref["name"])
            assert named == {"payments-api-primary", "payments-api-canary"}
        else:
            assert rule["paths"] == ["/spec/replicas"]
