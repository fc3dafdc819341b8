"""Locate the install kustomizations and render them offline with `kubectl kustomize`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def kustomizations() -> list[Path]:
    """Every directory under manifests/ that kustomize builds (crd/ and samples/ link into canaryd/data)."""
    return sorted(
        Path(root) for root, _, files in os.walk(MANIFESTS, followlinks=True) if "kustomization.yaml" in files
    )


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, offline, parsed into objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
