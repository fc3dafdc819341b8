"""Fixtures for the packaging tests: a real helm, built from Go modules, and chart rendering.

`helm` is the client from helm.sh/helm/v3 at the version pinned in
packaging/helm/go.mod, built by packaging/helm/build into a cache outside the
checkout (scripts/test builds it before the suite; here it is built when
missing, which takes minutes the first time). $CANARYD_HELM names another
binary of the same version.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "canaryd"
BUILD_HELM = REPO / "packaging" / "helm" / "build"
RELEASE = "canaryd"
NAMESPACE = "canaryd-system"


@pytest.fixture(scope="session")
def helm() -> str:
    given = os.environ.get("CANARYD_HELM")
    if given:
        assert Path(given).is_file() and os.access(given, os.X_OK), f"CANARYD_HELM={given} is not executable"
        return given
    built = subprocess.run([str(BUILD_HELM)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"packaging/helm/build failed: {built.stderr.strip()}", pytrace=False)
    return built.stdout.strip().splitlines()[-1]


HelmTemplate = Callable[..., list[dict[str, Any]]]


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result


@pytest.fixture(scope="session")
def helm_template(helm: str) -> HelmTemplate:
    """`helm template canaryd charts/canaryd -n canaryd-system --set K=V ...`, parsed."""

    def template(
        *settings: str, values: dict[str, Any] | None = None, tmp: Path | None = None
    ) -> list[dict[str, Any]]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for setting in settings:
            args += ["--set", setting]
        if values is not None:
            assert tmp is not None, "values need a directory for their file"
            path = tmp / "values.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["--values", str(path)]
        result = run_helm(helm, *args)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return template
