#!/usr/bin/env python3
"""Render what a release ships from the kustomize manifests, and check that it is current.

The manifests under manifests/ are the one source of the install. A release
also ships `deploy/install.yaml` (the whole install as one file, for
`kubectl apply -f`) and a Helm chart that carries copies of the CRDs, the
alerts and the Grafana dashboard (Helm reads only files inside the chart).
This script writes those from the manifests, and checks that every place
naming the version (pyproject.toml, the image tag in the kustomization, the
Dockerfile, the chart) names the same one.

    .venv/bin/python packaging/render_release.py          # write deploy/install.yaml and the chart's copies
    .venv/bin/python packaging/render_release.py --check  # exit 1 and list what is stale; write nothing

Needs kubectl (for `kubectl kustomize`) and PyYAML (the project's virtualenv has it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INSTALL = Path("deploy/install.yaml")
CHART = Path("charts/canaryd")
#: Chart file -> the manifest it is a copy of.
CHART_COPIES = {
    CHART / "files/crds/canaries.canaryd.io.yaml": Path("manifests/crd/canaries.canaryd.io.yaml"),
    CHART / "files/crds/metrictemplates.canaryd.io.yaml": Path(
        "manifests/crd/metrictemplates.canaryd.io.yaml"
    ),
    CHART / "files/alerts.yaml": Path("manifests/prometheus/alerts.yaml"),
    CHART / "files/canaryd-dashboard.json": Path("manifests/grafana/canaryd-dashboard.json"),
}
IMAGE = "canaryd"


class ReleaseError(Exception):
    """Something a person must fix by hand (a version that disagrees, kubectl missing)."""


def project_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def version_mismatches(root: Path, version: str) -> list[str]:
    """Every file that names another version than pyproject.toml, as 'file: what it says'."""
    found: list[str] = []
    kustomization = yaml.safe_load((root / "manifests/manager/kustomization.yaml").read_text())
    tags = [i.get("newTag") for i in kustomization.get("images", []) if i.get("name") == IMAGE]
    if tags != [version]:
        found.append(f"manifests/manager/kustomization.yaml: images newTag {tags}")
    chart = yaml.safe_load((root / CHART / "Chart.yaml").read_text())
    for field in ("version", "appVersion"):
        if str(chart.get(field)) != version:
            found.append(f"{CHART}/Chart.yaml: {field} {chart.get(field)!r}")
    dockerfile = (root / "Dockerfile").read_text()
    arg = re.search(r"^ARG VERSION=(\S+)$", dockerfile, flags=re.M)
    if arg is None or arg.group(1) != version:
        found.append(f"Dockerfile: ARG VERSION={arg.group(1) if arg else '(missing)'}")
    return found


def render_install(root: Path, version: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ReleaseError("kubectl is missing: it renders the kustomizations (kubectl kustomize)")
    result = subprocess.run(
        [kubectl, "kustomize", str(root / "manifests/default")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ReleaseError(f"kubectl kustomize manifests/default failed: {result.stderr.strip()}")
    header = (
        f"# canaryd {version}: the whole install (CRDs, RBAC, controller) in one file.\n"
        f"#   kubectl apply -f install.yaml\n"
        f"# The image is {IMAGE}:{version}. Rendered from manifests/default by\n"
        f"# packaging/render_release.py; do not edit by hand.\n"
    )
    return header + result.stdout


def stale_files(root: Path, version: str) -> dict[Path, str]:
    """Each released file whose content is not what the manifests give, with that content."""
    wanted: dict[Path, str] = {INSTALL: render_install(root, version)}
    for copy, source in CHART_COPIES.items():
        wanted[copy] = (root / source).read_text()
    stale = {}
    for path, content in wanted.items():
        current = root / path
        if not current.is_file() or not _same(path, current.read_text(), content):
            stale[path] = content
    return stale


def _same(path: Path, current: str, wanted: str) -> bool:
    """Equal content; install.yaml is compared object by object, so a kubectl whose YAML
    formatting differs does not make a current file stale."""
    if path != INSTALL:
        return current == wanted
    header = [line for line in wanted.splitlines() if line.startswith("#")]
    return current.splitlines()[: len(header)] == header and list(yaml.safe_load_all(current)) == list(
        yaml.safe_load_all(wanted)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        version = project_version(root)
        mismatches = version_mismatches(root, version)
        if mismatches:
            print(f"render_release: pyproject.toml says {version}, but:", file=sys.stderr)
            for line in mismatches:
                print(f"  {line}", file=sys.stderr)
            return 1
        stale = stale_files(root, version)
    except ReleaseError as error:
        print(f"render_release: {error}", file=sys.stderr)
        return 2
    if args.check:
        if stale:
            rerun = ".venv/bin/python packaging/render_release.py"
            print(f"render_release: stale, run `{rerun}`:", file=sys.stderr)
            for path in stale:
                print(f"  {path}", file=sys.stderr)
            return 1
        print(f"render_release: {INSTALL} and the chart's copies are current for {version}")
        return 0
    for path, content in stale.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
        print(f"wrote {path}")
    if not stale:
        print(f"render_release: nothing to do, everything is current for {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
