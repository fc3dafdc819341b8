"""``scripts/cluster``: build the binaries, start or stop a local cluster, print its environment.

Why this module exists: people need the same cluster the tests use, outside pytest, with one command
each to build, start, inspect and stop it. A cluster started here outlives the command (``down`` stops
it); every failure is one line on stderr and a nonzero exit code.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cluster import build
from cluster.harness import COMPONENTS, Cluster, ClusterConfig, ClusterError, runs_dir


def default_dir() -> Path:
    return runs_dir() / "default"


def _up(args: argparse.Namespace) -> int:
    config = ClusterConfig(
        nodes=args.nodes,
        pod_cidr=args.pod_cidr,
        gateway_api=None if args.no_gateway_api else args.gateway_api,
    )
    cluster = Cluster.create(config, args.dir, owner_pid=0)
    seconds = cluster.start()
    print(f"cluster up in {seconds:.1f} s: {cluster.server} (Kubernetes {cluster.version})")
    print(f"run dir: {cluster.run_dir}")
    flag = _dir_flag(args)
    print(f'use it: eval "$(scripts/cluster env{flag})"; stop it: scripts/cluster down{flag}')
    return 0


def _dir_flag(args: argparse.Namespace) -> str:
    return (
        "" if Path(args.dir).resolve() == default_dir().resolve() else f" --dir {shlex.quote(str(args.dir))}"
    )


def _down(args: argparse.Namespace) -> int:
    if not Path(args.dir).exists():
        print(f"no cluster in {args.dir}")
        return 0
    try:
        cluster = Cluster.load(args.dir)
    except ClusterError:
        import shutil

        shutil.rmtree(args.dir, ignore_errors=True)
        print(f"removed {args.dir} (it held no cluster state)")
        return 0
    cluster.stop(remove=True)
    print(f"cluster in {args.dir} stopped and removed")
    return 0


def _env(args: argparse.Namespace) -> int:
    cluster = Cluster.load(args.dir)
    for name, value in cluster.env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = Cluster.load(args.dir)
    status = cluster.status()
    print(f"{status['server']}  ready={status['ready']}  dir={status['run_dir']}")
    for name in COMPONENTS:
        entry = status["components"][name]
        state = f"running (pid {entry['pid']})" if entry["running"] else "stopped"
        print(f"  {name:<24} {state:<22} {entry['log']}")
    return 0 if status["ready"] and all(c["running"] for c in status["components"].values()) else 1


def _kubectl(args: argparse.Namespace) -> int:
    cluster = Cluster.load(args.dir)
    proc = cluster.kubectl(*args.args, check=False)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build"]:
        return build.main(argv[1:])
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build and cache the binaries (see: scripts/cluster build --help)")
    commands = {
        "up": (_up, "start a cluster in the background"),
        "down": (_down, "stop a cluster and remove its directory"),
        "env": (_env, "print export lines (KUBECONFIG, PATH with kubectl)"),
        "status": (_status, "show each component and whether the API server is ready"),
        "kubectl": (_kubectl, "run the matching kubectl against the cluster"),
    }
    for name, (_, help_text) in commands.items():
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--dir", default=str(default_dir()), help="run directory (default: %(default)s)")
        if name == "up":
            command.add_argument("--nodes", type=int, default=2)
            command.add_argument("--pod-cidr", default=ClusterConfig.pod_cidr)
            command.add_argument("--gateway-api", default="standard", choices=("standard", "experimental"))
            command.add_argument("--no-gateway-api", action="store_true")
        if name == "kubectl":
            command.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        return commands[args.command][0](args)
    except ClusterError as error:
        print(f"cluster {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
