"""`canaryd sandbox`: run the local stand-in cluster until interrupted.

A newcomer's first step, and the place to try canaryd by hand: it starts the
sandbox API server (kubectl and kubernetes_asyncio work against it), the
Deployment controller, the Gateway implementation with a ready GatewayClass,
the traffic data plane exporting request metrics and, with
`--with-prometheus`, Debian's real Prometheus scraping those metrics every
second. It writes a kubeconfig, prints every address, and on Ctrl-C or
SIGTERM stops everything it started, Prometheus included.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TextIO

DEFAULT_PORT = 8001
DEFAULT_PROMETHEUS_PORT = 9090
DEFAULT_KUBECONFIG = "canaryd-sandbox.kubeconfig"
DEFAULT_GATEWAY_CLASS = "canaryd-sandbox"

EXIT_PROMETHEUS_MISSING = 2
EXIT_START_FAILED = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"API server port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--kubeconfig-out",
        type=Path,
        default=Path(DEFAULT_KUBECONFIG),
        metavar="FILE",
        help=f"where to write the kubeconfig (default ./{DEFAULT_KUBECONFIG})",
    )
    parser.add_argument(
        "--with-prometheus",
        action="store_true",
        help="also run Debian's prometheus, scraping the traffic metrics",
    )
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=DEFAULT_PROMETHEUS_PORT,
        help=f"Prometheus port on 127.0.0.1 (default {DEFAULT_PROMETHEUS_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="Prometheus scrape interval (default 1)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="port of the traffic simulator's /metrics (default: a free one)",
    )
    parser.add_argument(
        "--ready-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds until a Deployment's new pods count as ready (default 1)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per second of a Deployment's progressDeadlineSeconds (default 1)",
    )
    parser.add_argument(
        "--no-traffic",
        dest="simulate_traffic",
        action="store_false",
        help="lean mode: no traffic simulation and no traffic metrics (for benchmarks that judge canaries "
        "otherwise; cannot be combined with --with-prometheus)",
    )
    parser.add_argument(
        "--gateway-class",
        default=DEFAULT_GATEWAY_CLASS,
        help=f"name of the GatewayClass created for the sandbox gateway "
        f"(default {DEFAULT_GATEWAY_CLASS}; empty for none)",
    )


def main(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args, sys.stdout, sys.stderr))


async def serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from canaryd.sandbox.cluster import SandboxCluster
    from canaryd.sandbox.prometheus_server import (
        INSTALL_HINT,
        PrometheusNotInstalledError,
        PrometheusStartError,
    )
    from canaryd.sandbox.sim.gateway import CONTROLLER_NAME

    simulate_traffic = getattr(args, "simulate_traffic", True)
    if args.with_prometheus and not simulate_traffic:
        print("canaryd sandbox: --with-prometheus scrapes the traffic simulator; drop --no-traffic", file=err)
        return EXIT_USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    cluster = SandboxCluster(
        port=args.port,
        kubeconfig_path=args.kubeconfig_out.resolve(),
        with_prometheus=args.with_prometheus,
        prometheus_port=args.prometheus_port,
        metrics_port=args.metrics_port,
        scrape_interval=args.scrape_interval,
        ready_delay=args.ready_delay,
        time_scale=args.time_scale,
        gateway_class=args.gateway_class or None,
        simulate_traffic=simulate_traffic,
    )
    try:
        await cluster.start()
    except PrometheusNotInstalledError as error:
        print(f"canaryd sandbox: --with-prometheus needs Debian's Prometheus: {error}", file=err)
        if INSTALL_HINT not in str(error):
            print(INSTALL_HINT, file=err)
        return EXIT_PROMETHEUS_MISSING
    except (OSError, PrometheusStartError) as error:
        print(f"canaryd sandbox: could not start: {error}", file=err)
        return EXIT_START_FAILED
    try:
        kubeconfig = cluster.kubeconfig_path
        lines = [
            "canaryd sandbox is running",
            f"  API server:   {cluster.api_url}",
            f"  kubeconfig:   {kubeconfig}",
        ]
        if cluster.simulate_traffic:
            lines.append(f"  metrics:      {cluster.metrics_url}")
        if cluster.prometheus_url is not None:
            lines.append(
                f"  Prometheus:   {cluster.prometheus_url} (pid {cluster.prometheus_pid}, "
                f"scraping every {args.scrape_interval:g}s)"
            )
        if args.gateway_class:
            lines.append(f"  GatewayClass: {args.gateway_class} (controllerName {CONTROLLER_NAME})")
        lines += [
            f"Try: export KUBECONFIG={kubeconfig}; kubectl get gatewayclasses",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), file=out, flush=True)
        await stop.wait()
        print("Stopping ...", file=out, flush=True)
    finally:
        await cluster.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("Stopped.", file=out, flush=True)
    return 0
