"""Build and cache the test cluster's binaries and CRDs, keyed by version, outside the checkout.

Why this module exists: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, kwok, optionally helm) has no Debian or PyPI package recent enough, but every
piece is a Go module the module proxy serves. Each tool has a small wrapper module of ours under
``cluster/go/<tool>/`` whose go.mod and go.sum pin it (``tool`` directives), so builds are reproducible.

The result lands in ``${XDG_CACHE_HOME:-~/.cache}/canaryd/cluster/<tool>-<version>/bin/`` with a stamp
holding a hash of the wrapper's go.mod, go.sum and build flags. A warm run compares stamps and never
starts the go command. Go's own caches (``go env GOMODCACHE``, ``GOCACHE``) are kept as they are.

Every failure is raised as :class:`BuildError` with one line naming the cause (no toolchain, proxy
unreachable, build failed: see log) for ``scripts/cluster build`` to print.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

GO_DIR = Path(__file__).resolve().parent / "go"
# Bump when the layout of the cache or the way binaries are built changes.
BUILD_SCHEMA = "1"

K8S_TAGS = "selinux,notest,grpcnotrace"


class BuildError(Exception):
    """A build step failed; str() is one line naming the cause."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "canaryd" / "cluster"


def _k8s_ldflags(version: str) -> list[str]:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return flags


def _helm_ldflags(version: str) -> list[str]:
    # The Kubernetes version helm assumes for `helm template` and `helm lint` (a chart's kubeVersion is
    # checked against it) comes from the client-go it is built with, as helm's own Makefile sets it;
    # without it helm assumes 1.20 and refuses charts that ask for a newer Kubernetes.
    kube_minor = required_version(GO_DIR / "helm" / "go.mod", "k8s.io/client-go").split(".")[1]
    flags = [
        f"-X helm.sh/helm/v3/internal/version.version={version}",
        "-X helm.sh/helm/v3/internal/version.metadata=",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={kube_minor}"]
    return flags


def _no_ldflags(version: str) -> list[str]:
    return []


@dataclass(frozen=True)
class GoTool:
    """One wrapper module under cluster/go/ and the binaries built from it."""

    name: str
    module: str  # the upstream module whose required version names the cache entry
    packages: dict[str, str]  # package path -> binary name
    ldflags: Callable[[str], list[str]] = _no_ldflags
    tags: str = ""
    optional: bool = False
    data: tuple[str, ...] = ()  # files of the upstream module copied to <entry>/data/ (e.g. kwok's stages)

    @property
    def module_dir(self) -> Path:
        return GO_DIR / self.name

    @property
    def version(self) -> str:
        return required_version(self.module_dir / "go.mod", self.module)

    @property
    def binaries(self) -> list[str]:
        return list(self.packages.values())


TOOLS: dict[str, GoTool] = {
    tool.name: tool
    for tool in (
        GoTool("etcd", "go.etcd.io/etcd/server/v3", {"go.etcd.io/etcd/server/v3": "etcd"}),
        GoTool(
            "kubernetes",
            "k8s.io/kubernetes",
            {
                "k8s.io/kubernetes/cmd/kube-apiserver": "kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager": "kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler": "kube-scheduler",
                "k8s.io/kubernetes/cmd/kubectl": "kubectl",
            },
            ldflags=_k8s_ldflags,
            tags=K8S_TAGS,
        ),
        GoTool(
            "kwok",
            "sigs.k8s.io/kwok",
            {"sigs.k8s.io/kwok/cmd/kwok": "kwok"},
            # The kwok binary has no built-in stages (kwokctl passes these): the default "fast" set.
            data=(
                "kustomize/stage/node/fast/node-initialize.yaml",
                "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
                "kustomize/stage/pod/fast/pod-ready.yaml",
                "kustomize/stage/pod/fast/pod-complete.yaml",
                "kustomize/stage/pod/fast/pod-delete.yaml",
            ),
        ),
        GoTool(
            "helm",
            "helm.sh/helm/v3",
            {"helm.sh/helm/v3/cmd/helm": "helm"},
            ldflags=_helm_ldflags,
            optional=True,
        ),
    )
}
BINARY_TOOL = {binary: tool.name for tool in TOOLS.values() for binary in tool.binaries}
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
GATEWAY_API_DIR = GO_DIR / "gateway-api"
DEFAULT_TARGETS = ("etcd", "kubernetes", "kwok", "gateway-api")
ALL_TARGETS = (*DEFAULT_TARGETS, "helm")


def required_version(go_mod: Path, module: str) -> str:
    """The version of ``module`` that a go.mod requires."""
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise BuildError(f"{go_mod} does not require {module}")
    return match.group(1)


def gateway_api_version() -> str:
    return required_version(GATEWAY_API_DIR / "go.mod", GATEWAY_API_MODULE)


def entry_dir(name: str, version: str) -> Path:
    return cache_root() / f"{name}-{version}"


def _key(tool: GoTool) -> str:
    digest = hashlib.sha256()
    for part in ("go.mod", "go.sum"):
        path = tool.module_dir / part
        digest.update(path.read_bytes() if path.exists() else b"")
    flags = {
        "schema": BUILD_SCHEMA,
        "packages": tool.packages,
        "tags": tool.tags,
        "ldflags": tool.ldflags(tool.version),
        "data": tool.data,
    }
    digest.update(json.dumps(flags, sort_keys=True).encode())
    return digest.hexdigest()


def _gateway_key() -> str:
    digest = hashlib.sha256(BUILD_SCHEMA.encode())
    for part in ("go.mod", "go.sum"):
        digest.update((GATEWAY_API_DIR / part).read_bytes())
    return digest.hexdigest()


def _stamp_ok(directory: Path, key: str, required: Iterable[Path]) -> bool:
    try:
        stamp = json.loads((directory / "stamp.json").read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("key") == key and all(path.exists() for path in required)


def tool_bin_dir(name: str) -> Path:
    tool = TOOLS[name]
    return entry_dir(tool.name, tool.version) / "bin"


def is_cached(target: str) -> bool:
    if target == "gateway-api":
        directory = entry_dir("gateway-api", gateway_api_version())
        return _stamp_ok(directory, _gateway_key(), [directory / "crds" / "standard"])
    tool = TOOLS[target]
    directory = entry_dir(tool.name, tool.version)
    required = [directory / "bin" / b for b in tool.binaries]
    required += [directory / "data" / Path(d).name for d in tool.data]
    return _stamp_ok(directory, _key(tool), required)


def binary(name: str) -> Path:
    """The cached path of a binary (e.g. ``kube-apiserver``); raises BuildError if it is not built."""
    tool = BINARY_TOOL[name]
    if not is_cached(tool):
        raise BuildError(f"{name} is not built (run: scripts/cluster build)")
    return tool_bin_dir(tool) / name


def data_file(tool: str, name: str) -> Path:
    """A data file cached with a tool (e.g. ``data_file("kwok", "pod-ready.yaml")``)."""
    if not is_cached(tool):
        raise BuildError(f"{tool} is not built (run: scripts/cluster build)")
    return entry_dir(tool, TOOLS[tool].version) / "data" / name


def crd_dir(channel: str = "standard") -> Path:
    """The cached Gateway API CRDs of one release channel (``standard`` or ``experimental``)."""
    if not is_cached("gateway-api"):
        raise BuildError("the Gateway API CRDs are not cached (run: scripts/cluster build)")
    return entry_dir("gateway-api", gateway_api_version()) / "crds" / channel


def versions() -> dict[str, str]:
    result = {name: tool.version for name, tool in TOOLS.items()}
    result["gateway-api"] = gateway_api_version()
    return result


# ---------------------------------------------------------------------------------------------------------
# Running the go command


def find_go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )
    if not go:
        raise BuildError(
            "no Go toolchain: `go` is not on PATH nor at /usr/local/go/bin/go (Go >= 1.26 is needed)"
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CGO_ENABLED="0",
        GOTOOLCHAIN="local",  # never fetch another toolchain behind our back
        GOWORK="off",
        GOFLAGS=f"-mod=readonly -buildvcs=false -p={max(1, os.cpu_count() or 1)}",
    )
    return env


_PROXY_ERRORS = re.compile(
    r"dial tcp|no such host|connection refused|i/o timeout|network is unreachable|proxyconnect|"
    r"TLS handshake timeout|Temporary failure in name resolution|server misbehaving|connection reset"
)


def _nice() -> list[str]:
    nice = shutil.which("nice")
    return [nice, "-n", "10"] if nice else []


def _run(cmd: list[str], cwd: Path, log: Path, what: str) -> None:
    with log.open("a") as out:
        out.write(f"\n$ (cd {cwd} && {' '.join(cmd)})\n")
        out.flush()
        proc = subprocess.run(_nice() + cmd, cwd=cwd, env=_go_env(), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode == 0:
        return
    tail = log.read_text(errors="replace").strip().splitlines()[-40:]
    if any(_PROXY_ERRORS.search(line) for line in tail):
        raise BuildError(f"{what}: cannot reach the Go module proxy ({_goproxy(cmd[0])}); log: {log}")
    last = next((line for line in reversed(tail) if line.strip()), "")
    raise BuildError(f"{what} failed (exit {proc.returncode}): {last.strip()[:200]}; log: {log}")


def _goproxy(go: str) -> str:
    proc = subprocess.run([go, "env", "GOPROXY"], env=_go_env(), capture_output=True, text=True)
    return proc.stdout.strip() or "GOPROXY unknown"


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Result:
    target: str
    version: str
    cached: bool
    download_s: float = 0.0
    build_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.cached:
            return f"{self.target} {self.version}: cached"
        return f"{self.target} {self.version}: modules {self.download_s:.1f} s, build {self.build_s:.1f} s"


def _log_path(name: str, version: str) -> Path:
    logs = cache_root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}-{version}.log"
    log.write_text(f"# {name} {version} build, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return log


def _build_tool(tool: GoTool, go: str) -> Result:
    version = tool.version
    final = entry_dir(tool.name, version)
    log = _log_path(tool.name, version)
    what = f"building {tool.name} {version}"
    start = time.monotonic()
    _run([go, "mod", "download"], tool.module_dir, log, f"downloading {tool.name} {version}'s modules")
    downloaded = time.monotonic()
    staging = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bin").mkdir(parents=True)
    ldflags = " ".join(["-s", "-w", *tool.ldflags(version)])
    cmd = [go, "build", "-trimpath", "-ldflags", ldflags]
    if tool.tags:
        cmd += ["-tags", tool.tags]
    if len(tool.packages) == 1:
        ((package, name),) = tool.packages.items()
        cmd += ["-o", str(staging / "bin" / name), package]
    else:  # one invocation for all: they share most packages
        cmd += ["-o", str(staging / "bin") + "/", *tool.packages]
    try:
        _run(cmd, tool.module_dir, log, what)
        for package, name in tool.packages.items():
            built = staging / "bin" / package.rsplit("/", 1)[-1]
            if not (staging / "bin" / name).exists() and built.exists():
                built.rename(staging / "bin" / name)
        if tool.data:
            source = _module_dir(go, tool.module_dir, tool.module, log)
            (staging / "data").mkdir()
            for relative in tool.data:
                shutil.copyfile(source / relative, staging / "data" / Path(relative).name)
        built_at = time.monotonic()
        result = Result(tool.name, version, False, downloaded - start, built_at - downloaded)
        stamp = {
            "key": _key(tool),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "build_s": round(result.build_s, 1),
        }
        (staging / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _module_dir(go: str, module_dir: Path, module: str, log: Path) -> Path:
    """Where the go command extracted ``module`` (at the version module_dir's go.mod selects)."""
    proc = subprocess.run(
        [go, "mod", "download", "-json", module],
        cwd=module_dir,
        env=_go_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BuildError(f"downloading {module} failed: {proc.stderr.strip()[:200]}; log: {log}")
    return Path(json.loads(proc.stdout)["Dir"])


def _fetch_gateway_api(go: str) -> Result:
    version = gateway_api_version()
    final = entry_dir("gateway-api", version)
    log = _log_path("gateway-api", version)
    start = time.monotonic()
    _run(
        [go, "mod", "download", GATEWAY_API_MODULE],
        GATEWAY_API_DIR,
        log,
        f"downloading gateway-api {version}",
    )
    source = _module_dir(go, GATEWAY_API_DIR, GATEWAY_API_MODULE, log) / "config" / "crd"
    staging = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for channel in ("standard", "experimental"):
            target = staging / "crds" / channel
            target.mkdir(parents=True)
            for yaml_file in sorted((source / channel).glob("*.yaml")):
                if yaml_file.name != "kustomization.yaml":
                    shutil.copyfile(yaml_file, target / yaml_file.name)
        (staging / "stamp.json").write_text(json.dumps({"key": _gateway_key()}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Result("gateway-api", version, False, time.monotonic() - start, 0.0)


def _version_of(target: str) -> str:
    return gateway_api_version() if target == "gateway-api" else TOOLS[target].version


def ensure(
    targets: Iterable[str] = DEFAULT_TARGETS,
    *,
    force: bool = False,
    echo: bool = True,
    stream: TextIO | None = None,
) -> list[Result]:
    """Build whatever of ``targets`` is not cached yet; returns one Result per target.

    With ``echo``, one progress line per target goes to ``stream`` (default: stdout).
    """

    def say(line: str) -> None:
        if echo:
            print(line, file=stream or sys.stdout, flush=True)

    targets = list(targets)
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown:
        raise BuildError(f"unknown build target {unknown[0]!r} (known: {', '.join(ALL_TARGETS)})")
    results: list[Result] = []
    missing = [t for t in targets if force or not is_cached(t)]
    for target in targets:
        if target not in missing:
            results.append(Result(target, _version_of(target), True))
            say(results[-1].line())
    if not missing:
        return results
    go = find_go()
    with _lock():
        for target in missing:
            if not force and is_cached(target):  # another process built it while we waited
                result = Result(target, _version_of(target), True)
            else:
                verb = "fetching" if target == "gateway-api" else "building"
                say(f"{target} {_version_of(target)}: {verb} (log: {cache_root() / 'logs'}) ...")
                result = _fetch_gateway_api(go) if target == "gateway-api" else _build_tool(TOOLS[target], go)
            results.append(result)
            say(result.line())
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/cluster build", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"what to build (default: {' '.join(DEFAULT_TARGETS)})")
    parser.add_argument("--with-helm", action="store_true", help="also build helm")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    targets = args.targets or list(DEFAULT_TARGETS)
    if args.with_helm and "helm" not in targets:
        targets.append("helm")
    start = time.monotonic()
    try:
        ensure(targets, force=args.force)
    except BuildError as error:
        print(f"cluster build: {error}", file=sys.stderr)
        return 1
    print(f"total {time.monotonic() - start:.1f} s; cache: {cache_root()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
