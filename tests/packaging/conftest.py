"""Fixtures for the packaging tests: real helm and krew, built from Go modules, and chart rendering.

`helm` is the client from helm.sh/helm/v3 at the version pinned in
cluster/go/helm/go.mod (built by the cluster build), and `krew` the one from sigs.k8s.io/krew pinned in
packaging/krew/go.mod, each built by its `build` script into a cache outside
the checkout (scripts/test builds them before the suite; here they are built
when missing, which takes minutes the first time). $CANARYD_HELM and
$CANARYD_KREW name other binaries of the same versions.
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
BUILD_KREW = REPO / "packaging" / "krew" / "build"
RELEASE = "canaryd"
NAMESPACE = "canaryd-system"


def _go_tool(variable: str, build: Path) -> str:
    given = os.environ.get(variable)
    if given:
        assert Path(given).is_file() and os.access(given, os.X_OK), f"{variable}={given} is not executable"
        return given
    built = subprocess.run([str(build)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"{build.relative_to(REPO)} failed: {built.stderr.strip()}", pytrace=False)
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def helm() -> str:
    return _go_tool("CANARYD_HELM", BUILD_HELM)


@pytest.fixture(scope="session")
def krew() -> str:
    return _go_tool("CANARYD_KREW", BUILD_KREW)


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
