"""``canaryd``: one program for the controller, the local sandbox, the demo and the backtest.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``; they are imported only when chosen, so ``canaryd --help``
stays fast and a missing optional piece never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "run": ("canaryd.cli.run", "run the controller"),
    "sandbox": ("canaryd.cli.sandbox", "run the local stand-in cluster until interrupted"),
    "demo": ("canaryd.cli.demo", "the guided first run on the sandbox with a real Prometheus"),
    "loadtest": ("canaryd.cli.loadtest", "the load tester that Canary rollout webhooks call"),
    "backtest": ("canaryd.cli.backtest", "replay a Canary's analysis over past Prometheus data"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canaryd",
        description="Progressive delivery on Gateway API routes, judged by Prometheus.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args._module.main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
