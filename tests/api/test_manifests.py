"""The CRD and sample kustomizations render offline, and the CRDs are ones a cluster would take.

kube-apiserver refuses a CRD whose schema is not structural, whose defaults
are invalid or would be pruned, or whose list-map keys may be missing; we
cannot run one here, so these rules are checked directly on the files.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from canaryd.api.models import (
    ActionAcknowledgement,
    ActionRequest,
    CanarySpec,
    CanaryStatus,
    Condition,
    MetricStatus,
    MetricTemplateSpec,
    RouteGenerations,
)
from canaryd.sandbox.server import openapi
from tests.api.crd_support import CRD_DIR, ROOT, SAMPLES_DIR, crd, schema

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def _kustomize(directory: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@needs_kubectl
def test_the_crd_kustomization_renders_both_crds() -> None:
    rendered = _kustomize("manifests/crd")
    assert sorted(d["metadata"]["name"] for d in rendered) == [
        "canaries.canaryd.io",
        "metrictemplates.canaryd.io",
    ]
    assert rendered == [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.canaryd.io.yaml"))]


@needs_kubectl
def test_the_sample_kustomization_renders_every_sample() -> None:
    rendered = _kustomize("manifests/samples")
    kinds = sorted({d["kind"] for d in rendered})
    assert kinds == [
        "Canary",
        "Deployment",
        "GRPCRoute",
        "Gateway",
        "GatewayClass",
        "HTTPRoute",
        "MetricTemplate",
        "Namespace",
    ]
    route = next(d for d in rendered if d["kind"] == "HTTPRoute")
    weighted = [r["backendRefs"] for r in route["spec"]["rules"] if len(r["backendRefs"]) == 2]
    assert weighted == [
        [
            {"name": "payments-api-primary", "port": 8080, "weight": 100},
            {"name": "payments-api-canary", "port": 8080, "weight": 0},
        ]
    ]
    gateway_class = next(d for d in rendered if d["kind"] == "GatewayClass")
    assert gateway_class["spec"]["controllerName"] == "canaryd.io/sandbox-gateway"
    deployment = next(
        d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "payments-api"
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"sandbox.canaryd.io/error-rate", "sandbox.canaryd.io/latency-ms"}


def test_every_sample_file_is_listed_in_the_kustomization() -> None:
    listed = yaml.safe_load((SAMPLES_DIR / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in SAMPLES_DIR.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        found.extend(_walk(child, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        found.extend(_walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


@pytest.mark.parametrize("kind", ["Canary", "MetricTemplate"])
def test_the_schema_is_structural_with_valid_pruned_defaults(kind: str) -> None:
    assert openapi.check_schema(schema(kind)) == []
    defaults = [path for path, node in _walk(schema(kind)) if "default" in node]
    assert len(defaults) >= (10 if kind == "Canary" else 5)


def test_the_canary_crd_has_a_status_subresource_and_the_template_crd_none() -> None:
    canary_version = crd("Canary")["spec"]["versions"][0]
    assert canary_version["subresources"] == {"status": {}}
    assert "subresources" not in crd("MetricTemplate")["spec"]["versions"][0]
    assert "status" not in schema("MetricTemplate")["properties"]


def test_printer_columns_show_phase_weight_failures_and_more_under_wide() -> None:
    columns = crd("Canary")["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    wide = [c["name"] for c in columns if c.get("priority") == 1]
    assert default == ["Phase", "Weight", "FailedChecks", "Ready", "Reason", "LastTransition", "Age"]
    assert {"Target", "Step", "Revision", "Progress"} <= set(wide)
    status_fields = schema("Canary")["properties"]["status"]["properties"]
    condition_fields = status_fields["conditions"]["items"]["properties"]
    for column in columns:
        where, _, field = column["jsonPath"].lstrip(".").partition(".")
        if where == "status":
            field, _, condition_field = field.partition('[?(@.type=="Ready")].')
            assert field in status_fields, column
            assert not condition_field or condition_field in condition_fields, column


def _aliases(model: Any) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


@pytest.mark.parametrize(
    ("model", "location"),
    [
        (CanarySpec, ("Canary", "spec")),
        (CanaryStatus, ("Canary", "status")),
        (Condition, ("Canary", "status.conditions[]")),
        (MetricStatus, ("Canary", "status.metrics[]")),
        (ActionAcknowledgement, ("Canary", "status.lastAction")),
        (ActionRequest, ("Canary", "status.requestedAction")),
        (RouteGenerations, ("Canary", "status.routeGenerations[]")),
        (MetricTemplateSpec, ("MetricTemplate", "spec")),
    ],
)
def test_models_and_schemas_declare_the_same_fields(model: Any, location: tuple[str, str]) -> None:
    kind, where = location
    node = dict(_walk(schema(kind)))["." + where]
    assert _aliases(model) == set(node["properties"])
    required = {info.alias or name for name, info in model.model_fields.items() if info.is_required()}
    assert required <= set(node.get("required", []))
