"""`kubectl canary` installs on a laptop as the README says, with pipx and with krew, and kubectl runs it.

- pipx: the README's commands, run as written in a copy of the sources (the
  wheel is built there, pipx installs it into a home of its own), and then
  `kubectl canary --help` through kubectl's plugin lookup.
- krew: packaging/krew/build_plugin.py builds the archive and the manifest;
  the manifest's fields are checked against krew's Plugin schema, then the
  real krew (sigs.k8s.io/krew, built from Go modules) installs it from the
  local files, as krew-index asks of plugin authors, and kubectl runs it: the
  launcher installs canaryd on the first run and reuses it afterwards.

Both install canaryd's dependencies from PyPI (pip's cache makes it quick on a
machine that has them).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
BUILD_PLUGIN = REPO / "packaging" / "krew" / "build_plugin.py"
URL_BASE = f"https://releases.example/canaryd/v{VERSION}"
#: Sources the wheel is built from (as in the Dockerfile's builder stage).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "canaryd")
#: krew's Plugin (v1alpha2) fields, from its API types.
PLUGIN_SPEC_FIELDS = {"version", "homepage", "shortDescription", "description", "caveats", "platforms"}
PLATFORM_FIELDS = {"selector", "uri", "sha256", "bin", "files"}
KREW_OSES = {"linux", "darwin", "windows"}
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed")
    return found


def _isolated_env(tmp_path: Path, *bin_dirs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "KUBECONFIG"}}
    system = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
    env["PATH"] = os.pathsep.join([*(str(d) for d in bin_dirs), system])
    env["HOME"] = str(tmp_path / "home")
    env["XDG_DATA_HOME"] = str(tmp_path / "home" / ".local" / "share")
    env["KUBECONFIG"] = str(tmp_path / "no-cluster.kubeconfig")
    return env


def _readme_plugin_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### The kubectl plugin\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line.strip() for line in block.splitlines() if line.strip()]


def _copy_sources(into: Path) -> Path:
    into.mkdir()
    for name in WHEEL_SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, into / name)
    return into


def test_readme_installs_the_plugin_with_pipx_and_kubectl_runs_it(tmp_path: Path) -> None:
    commands = _readme_plugin_commands()
    assert any(c.startswith("pipx install dist/canaryd-") for c in commands), commands
    assert commands[-1] == "kubectl canary --help"
    source = _copy_sources(tmp_path / "src")
    tools = tmp_path / "tools"
    tools.mkdir()
    # `python3` and `pipx` are the ones a user has; here, this interpreter and the pipx beside it.
    (tools / "python3").symlink_to(sys.executable)
    pipx = shutil.which("pipx", path=str(Path(sys.executable).parent))
    assert pipx, "pipx comes with the dev extras (pip install -e '.[dev]')"
    (tools / "pipx").symlink_to(pipx)
    (tools / "kubectl").symlink_to(_kubectl())
    apps = tmp_path / "pipx-bin"
    env = _isolated_env(tmp_path, tools, apps)
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(apps), PIPX_MAN_DIR=str(tmp_path / "man"))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    for command in commands:
        result = subprocess.run(
            ["/bin/sh", "-c", command], cwd=source, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    assert "usage: kubectl canary" in result.stdout
    for program in ("kubectl-canary", "canaryctl"):
        assert (apps / program).exists(), f"pipx did not put {program} on PATH"
    listed = subprocess.run(
        [_kubectl(), "plugin", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert str(apps / "kubectl-canary") in listed.stdout, listed.stdout + listed.stderr


@pytest.fixture(scope="module")
def krew_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("krew-release")
    result = subprocess.run(
        [sys.executable, str(BUILD_PLUGIN), "--url-base", URL_BASE, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    archive = out / f"kubectl-canary-v{VERSION}.tar.gz"
    assert archive.is_file(), sorted(out.iterdir())
    return archive, yaml.safe_load((out / "canary.yaml").read_text())


def test_krew_manifest_is_a_valid_plugin(krew_release: tuple[Path, dict[str, Any]]) -> None:
    archive, plugin = krew_release
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin"
    name = plugin["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) and name == "canary"
    spec = plugin["spec"]
    assert set(spec) <= PLUGIN_SPEC_FIELDS, set(spec) - PLUGIN_SPEC_FIELDS
    assert SEMVER.match(spec["version"]) and spec["version"] == f"v{VERSION}"
    assert 0 < len(spec["shortDescription"]) <= 50 and "\n" not in spec["shortDescription"]
    assert spec["description"].strip() and spec["caveats"].strip()
    with tarfile.open(archive) as opened:
        members = {m.name: m for m in opened.getmembers()}
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    oses: set[str] = set()
    assert spec["platforms"]
    for platform in spec["platforms"]:
        assert set(platform) <= PLATFORM_FIELDS and {"selector", "uri", "sha256", "bin"} <= set(platform)
        assert platform["uri"] == f"{URL_BASE}/{archive.name}"
        assert platform["sha256"] == digest
        selector = platform["selector"]
        assert set(selector) <= {"matchLabels", "matchExpressions"} and selector
        for expression in selector.get("matchExpressions", []):
            assert expression["key"] in {"os", "arch"} and expression["operator"] in {"In", "NotIn"}
            if expression["key"] == "os":
                assert set(expression["values"]) <= KREW_OSES
                oses |= set(expression["values"])
        for key, value in selector.get("matchLabels", {}).items():
            assert key in {"os", "arch"}
            oses |= {value} if key == "os" else set()
        assert not (oses & {"windows"}), "the launcher is a POSIX shell script"
        for entry in platform.get("files", []):
            assert entry["to"] and any(fnmatch(member, entry["from"]) for member in members), entry
        bin_member = members[platform["bin"]]
        assert bin_member.mode & 0o111, "the plugin's entry point is executable"
    assert oses >= {"linux", "darwin"}


def test_krew_archive_is_reproducible(krew_release: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    archive, _ = krew_release
    again = subprocess.run(
        [sys.executable, str(BUILD_PLUGIN), "--url-base", URL_BASE, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (tmp_path / archive.name).read_bytes() == archive.read_bytes()


def test_krew_installs_the_plugin_and_kubectl_runs_it(
    krew: str, krew_release: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    archive, plugin = krew_release
    manifest = tmp_path / "canary.yaml"
    manifest.write_text(yaml.safe_dump(plugin))
    root = tmp_path / "krew"
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python3").symlink_to(sys.executable)
    env = _isolated_env(tmp_path, root / "bin", tools)
    env["KREW_ROOT"] = str(root)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    installed = subprocess.run(
        [krew, "install", f"--manifest={manifest}", f"--archive={archive}"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Installed plugin: canary" in installed.stdout + installed.stderr

    first = subprocess.run(
        [_kubectl(), "canary", "--help"], env=env, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "usage: kubectl canary" in first.stdout
    assert f"first run: installing canaryd {VERSION}" in first.stderr
    again = subprocess.run(
        [_kubectl(), "canary", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "usage: kubectl canary" in again.stdout
    assert "installing" not in again.stderr, "the second run reuses the installation"


@pytest.mark.parametrize(
    ("python", "complaint"),
    [("/nonexistent/python3", "not found"), ("/bin/false", "older than Python 3.11")],
)
def test_launcher_says_what_python_it_needs(
    krew_release: tuple[Path, dict[str, Any]], tmp_path: Path, python: str, complaint: str
) -> None:
    archive, _ = krew_release
    with tarfile.open(archive) as opened:
        opened.extractall(tmp_path / "plugin", filter="data")
    env = _isolated_env(tmp_path)
    env["CANARYD_PYTHON"] = python
    result = subprocess.run(
        [str(tmp_path / "plugin" / "kubectl-canary"), "--help"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("kubectl-canary: ") and complaint in result.stderr, result.stderr
    assert not list((tmp_path / "home").rglob("kubectl-canary-*")), "nothing is left half-installed"
