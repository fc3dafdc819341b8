"""Tests of cluster.build's failure modes and cache: one clear line for each failure, no go run when warm."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cluster import build


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty canaryd cache; Go's build cache stays where it was (it follows XDG_CACHE_HOME too)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    with contextlib.suppress(OSError):
        gocache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True).stdout.strip()
        if gocache:
            monkeypatch.setenv("GOCACHE", gocache)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_no_go_toolchain_is_one_line(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(build.BuildError, match=r"^no Go toolchain: ") as error:
        build.ensure(["gateway-api"], echo=False)
    assert "\n" not in str(error.value)


def test_unreachable_proxy_is_one_line(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMODCACHE", str(empty_cache / "mod"))
    monkeypatch.setenv("GOPROXY", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(
        build.BuildError, match=r"cannot reach the Go module proxy \(http://127.0.0.1:9\)"
    ) as error:
        build.ensure(["gateway-api"], echo=False)
    assert "\n" not in str(error.value)
    assert Path(str(error.value).rsplit("log: ", 1)[1]).is_file()
    subprocess.run(["chmod", "-R", "u+w", str(empty_cache / "mod")], check=False)  # let tmp_path go


def test_build_failure_names_the_tool_and_the_log(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go_dir = empty_cache / "go"
    wrapper = go_dir / "broken"
    (wrapper / "src").mkdir(parents=True)
    (wrapper / "go.mod").write_text(
        "module example.local/wrapper\n\ngo 1.24\n\nrequire example.local/broken v0.0.1\n\n"
        "replace example.local/broken => ./src\n"
    )
    (wrapper / "src" / "go.mod").write_text("module example.local/broken\n\ngo 1.24\n")
    (wrapper / "src" / "main.go").write_text("package main\n\nfunc main() { undefined() }\n")
    monkeypatch.setattr(build, "GO_DIR", go_dir)
    monkeypatch.setitem(
        build.TOOLS,
        "broken",
        build.GoTool("broken", "example.local/broken", {"example.local/broken": "broken"}),
    )
    monkeypatch.setattr(build, "ALL_TARGETS", (*build.ALL_TARGETS, "broken"))
    with pytest.raises(build.BuildError) as error:
        build.ensure(["broken"], echo=False)
    message = str(error.value)
    assert message.startswith("building broken v0.0.1 failed (exit 1): ") and "\n" not in message
    log = Path(message.rsplit("log: ", 1)[1])
    assert "undefined: undefined" in log.read_text()
    assert not (build.cache_root() / "broken-v0.0.1").exists()


def test_cli_prints_one_line_and_fails(empty_cache: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [str(repo / "scripts" / "cluster"), "build", "no-such-tool"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"cluster build: unknown build target 'no-such-tool' (known: {', '.join(build.ALL_TARGETS)})"
    ]


@pytest.mark.realcluster
def test_warm_build_runs_no_go_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build.ensure(build.DEFAULT_TARGETS, echo=False)  # builds on a cold machine

    def no_go(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm build ran a command")

    monkeypatch.setattr(subprocess, "run", no_go)
    monkeypatch.setattr(build, "find_go", no_go)
    start = time.monotonic()
    results = build.ensure(build.DEFAULT_TARGETS, echo=False)
    assert all(result.cached for result in results)
    assert time.monotonic() - start < 2.0
