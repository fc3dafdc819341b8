"""A release names one image everywhere, and its rendered files are current.

`deploy/install.yaml` and the chart's copies of the CRDs, alerts and
dashboard are written by packaging/render_release.py from the manifests; a
change to the manifests that was not rendered again fails here, as does a
version that pyproject.toml, the kustomization, the Dockerfile, the chart and
the README do not all agree on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.manifests.rendering import MANIFESTS, render
from tests.packaging.conftest import CHART, REPO

RENDER = REPO / "packaging" / "render_release.py"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"canaryd:{VERSION}"


def _render_release(*args: str, root: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDER), *args, "--root", str(root)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_released_files_are_current() -> None:
    result = _render_release("--check")
    assert result.returncode == 0, result.stderr


def test_install_yaml_is_manifests_default_with_the_release_image() -> None:
    text = (REPO / "deploy" / "install.yaml").read_text()
    assert text.startswith(f"# canaryd {VERSION}:")
    installed = [doc for doc in yaml.safe_load_all(text) if doc]
    assert installed == render(MANIFESTS / "default")
    (deployment,) = [o for o in installed if o["kind"] == "Deployment"]
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [IMAGE]


def test_one_image_name_and_tag_in_the_dockerfile_the_readme_and_the_chart() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG VERSION={VERSION}\n" in dockerfile
    assert f"docker build -t {IMAGE} ." in dockerfile
    readme = (REPO / "README.md").read_text()
    builds = re.findall(r"docker build[^\n`]*", readme)
    assert builds and all(f"-t {IMAGE} " in f"{b} " for b in builds), builds
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)
    assert values["image"]["repository"] == "canaryd" and values["image"]["tag"] in ("", VERSION)


def _copy_release_inputs(into: Path) -> Path:
    for name in ("pyproject.toml", "Dockerfile"):
        shutil.copy2(REPO / name, into / name)
    for name in ("manifests", "charts", "deploy"):
        shutil.copytree(REPO / name, into / name)
    return into


def test_check_names_a_stale_file_and_rendering_fixes_it(tmp_path: Path) -> None:
    root = _copy_release_inputs(tmp_path)
    alerts = root / "manifests" / "prometheus" / "alerts.yaml"
    alerts.write_text(alerts.read_text().replace("for: 30m", "for: 45m"))
    crd = root / "manifests" / "crd" / "canaries.canaryd.io.yaml"
    crd.write_text("# An edited comment.\n" + crd.read_text())
    deployment = root / "manifests" / "manager" / "deployment.yaml"
    deployment.write_text(
        deployment.read_text().replace(
            "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 45"
        )
    )

    stale = _render_release("--check", root=root)
    assert stale.returncode == 1
    assert "charts/canaryd/files/alerts.yaml" in stale.stderr
    assert "deploy/install.yaml" in stale.stderr
    assert "charts/canaryd/files/crds/canaries.canaryd.io.yaml" in stale.stderr

    assert _render_release(root=root).returncode == 0
    assert _render_release("--check", root=root).returncode == 0
    assert "for: 45m" in (root / "charts" / "canaryd" / "files" / "alerts.yaml").read_text()
    assert "terminationGracePeriodSeconds: 45" in (root / "deploy" / "install.yaml").read_text()


@pytest.mark.parametrize(
    ("path", "old", "new", "complaint"),
    [
        ("manifests/manager/kustomization.yaml", "    newTag: ", "    newTag: 9.9.9-", "images newTag"),
        ("charts/canaryd/Chart.yaml", 'appVersion: "', 'appVersion: "9.', "appVersion"),
        ("Dockerfile", "ARG VERSION=", "ARG VERSION=9.", "Dockerfile: ARG VERSION"),
    ],
)
def test_a_version_that_disagrees_with_pyproject_is_named(
    tmp_path: Path, path: str, old: str, new: str, complaint: str
) -> None:
    root = _copy_release_inputs(tmp_path)
    target = root / path
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new, 1))
    result = _render_release("--check", root=root)
    assert result.returncode == 1
    assert f"pyproject.toml says {VERSION}" in result.stderr and complaint in result.stderr, result.stderr
