#!/usr/bin/env python3
"""Build the krew archive of `kubectl canary` and the manifest that points at it.

krew installs a plugin from an archive named by a manifest (a `Plugin` of
krew.googlecontainertools.github.com/v1alpha2) with the archive's sha256.
canaryd's plugin is Python, so the archive holds the canaryd wheel and the
launcher `kubectl-canary` (beside this file), which installs the wheel into a
virtual environment of its own on first use. One archive serves every
platform krew runs the plugin on.

    python3 packaging/krew/build_plugin.py --url-base https://releases.example/canaryd/v0.1.0

writes dist/krew/kubectl-canary-v<version>.tar.gz and dist/krew/canary.yaml
(publish the archive at URL-BASE; add the manifest to your krew index, or
install it directly: kubectl krew install --manifest=canary.yaml
--archive=kubectl-canary-v<version>.tar.gz). The archive is reproducible: the
same sources give the same sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: What the wheel is built from (as in the Dockerfile's builder stage).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "canaryd")
#: A fixed time for every file in the wheel and the archive (2024-01-01T00:00:00Z).
EPOCH = 1_704_067_200


def project_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def build_wheel(root: Path, into: Path) -> Path:
    """The canaryd wheel, built offline from a clean copy of the sources."""
    with tempfile.TemporaryDirectory(prefix="canaryd-wheel-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in WHEEL_SOURCES:
            origin = root / name
            if origin.is_dir():
                shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, source / name)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "--wheel-dir", str(into), str(source)],
            check=True, env=env, timeout=300,
        )  # fmt: skip
    (wheel,) = into.glob("canaryd-*-py3-none-any.whl")
    return wheel


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def build_archive(wheel: Path, launcher: Path, into: Path, version: str) -> Path:
    """A .tar.gz with the launcher and the wheel at its top, byte for byte reproducible."""
    target = into / f"kubectl-canary-v{version}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "kubectl-canary", launcher.read_bytes(), 0o755)
        _add(archive, wheel.name, wheel.read_bytes(), 0o644)
    with target.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        packed.write(buffer.getvalue())
    return target


def manifest(template: dict[str, object], version: str, uri: str, sha256: str) -> dict[str, object]:
    """The static manifest with the version, and each platform's uri and sha256, filled in."""
    plugin = yaml.safe_load(yaml.safe_dump(template))
    spec = plugin["spec"]
    spec["version"] = f"v{version}"
    for platform in spec["platforms"]:
        platform["uri"] = uri
        platform["sha256"] = sha256
    ordered = {
        key: spec[key] for key in ("version", "shortDescription", "description", "caveats") if key in spec
    }
    plugin["spec"] = {**ordered, **{k: v for k, v in spec.items() if k not in ordered}}
    return dict(plugin)


class _ManifestDumper(yaml.SafeDumper):
    """Writes multi-line strings (description, caveats) as literal blocks, as people write them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ManifestDumper.add_representer(str, _text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url-base", required=True, help="where the archive will be published (https://...)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "krew", help="output directory")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.url_base.startswith("https://"):
        parser.error("--url-base must be an https:// URL (krew downloads archives over https)")
    root: Path = args.root
    version = project_version(root)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canaryd-krew-") as scratch:
        wheel = build_wheel(root, Path(scratch))
        archive = build_archive(wheel, HERE / "kubectl-canary", out, version)
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    template = yaml.safe_load((HERE / "canary.yaml").read_text())
    plugin = manifest(template, version, f"{args.url_base.rstrip('/')}/{archive.name}", sha256)
    (out / "canary.yaml").write_text(yaml.dump(plugin, Dumper=_ManifestDumper, sort_keys=False, width=100))
    print(f"wrote {archive} (sha256 {sha256}) and {out / 'canary.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
