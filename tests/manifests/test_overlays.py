"""What a platform team changes from an overlay of its own works: the image, Prometheus' selector labels.

Each test writes a kustomization that uses the install as a base, as the
README tells platform teams to, and renders it with kubectl's kustomize.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.manifests.rendering import MANIFESTS, render


def _base(overlay: Path, name: str) -> str:
    """manifests/NAME as kustomize wants a base: a path relative to the overlay."""
    return os.path.relpath(MANIFESTS / name, overlay)


def _overlay(tmp_path: Path, **kustomization: Any) -> list[dict[str, Any]]:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                        **kustomization})
    )  # fmt: skip
    return render(tmp_path)


def test_an_images_entry_points_the_controller_at_another_registry_and_tag(tmp_path: Path) -> None:
    objects = _overlay(
        tmp_path,
        resources=[_base(tmp_path, "default")],
        images=[{"name": "canaryd", "newName": "registry.example/platform/canaryd", "newTag": "0.1.0-rc1"}],
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/platform/canaryd:0.1.0-rc1"


def test_an_images_entry_can_pin_a_digest(tmp_path: Path) -> None:
    digest = "sha256:" + "0f" * 32
    objects = _overlay(
        tmp_path, resources=[_base(tmp_path, "default")], images=[{"name": "canaryd", "digest": digest}]
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"canaryd@{digest}"


def test_release_label_for_kube_prometheus_stack(tmp_path: Path) -> None:
    objects = _overlay(
        tmp_path,
        resources=[_base(tmp_path, "prometheus")],
        labels=[{"pairs": {"release": "kube-prometheus-stack"}}],
    )
    assert {o["kind"] for o in objects} == {"ServiceMonitor", "PrometheusRule"}
    for obj in objects:
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    # The label goes on the objects Prometheus selects, not into the selector of canaryd's Service.
    assert "release" not in monitor["spec"]["selector"]["matchLabels"]
