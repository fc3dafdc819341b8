"""``canaryd demo``: a newcomer's first rollout, start to finish, on this machine.

A person deciding whether to trust canaryd wants to see it do its job before
installing anything into a cluster. The demo starts the sandbox (the local
stand-in Kubernetes API server, its simulated Deployments and Gateway data
plane) with a real Prometheus scraping the simulated traffic, starts the real
controller (`canaryd run`, as a child process against the sandbox's
kubeconfig), and applies, through the API server like kubectl, what an
application team would: the CRDs, the sandbox MetricTemplates from
analysis/sandbox.yaml, and the application in demo/sandbox-app.yaml (a
Gateway, a Deployment, an HTTPRoute listing both backendRefs, and a Canary).
All three come from the manifests shipped in the package (`canaryd.data`),
so the demo runs from an installed wheel in an empty directory; the Canary's
steps, threshold and metric bounds the demo prints are read from them too.

Then it releases two versions by changing the Deployment's pod template: a
healthy one, which must be promoted, and one answering 30 % of its requests
with errors (the sandbox's `sandbox.canaryd.io/error-rate` annotation), which
must be rolled back. It shows each step live (phase, the traffic split as a
bar, each metric against its threshold), redrawing in place on a terminal and
appending lines otherwise, and ends with a summary. It exits 0 when both
outcomes were the expected ones and 1 otherwise; ``--json`` prints the whole
timeline as JSON instead of the live view.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from canaryd import data
from canaryd.adapters.kube import CANARIES, DEPLOYMENTS, HTTP_ROUTES, KubeClient
from canaryd.api.constants import CANARY_SUFFIX, PRIMARY_SUFFIX, Phase
from canaryd.api.durations import parse_duration
from canaryd.cli.controller_process import ControllerProcess
from canaryd.sandbox.apply import create_all
from canaryd.sandbox.prometheus_server import PrometheusNotInstalledError, PrometheusStartError
from canaryd.sandbox.sim.knobs import ANNOTATION_ERROR_RATE, ANNOTATION_LATENCY_MS

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
#: What the demo applies, as shipped in the package (the one copy; docs/sandbox-app.yaml links to it).
APP_MANIFEST = ("demo", "sandbox-app.yaml")
TEMPLATES_MANIFEST = ("analysis", "sandbox.yaml")


def _the_canary(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    (canary,) = (d for d in documents if d.get("kind") == "Canary")
    return canary


_CANARY = _the_canary(data.documents(*APP_MANIFEST))
_ANALYSIS = _CANARY["spec"]["analysis"]
_BOUNDS = {m["name"]: m["thresholdRange"] for m in _ANALYSIS["metrics"]}
NAMESPACE: str = _CANARY["metadata"]["namespace"]
APP: str = _CANARY["spec"]["targetRef"]["name"]
#: The demo's real pace (the Canary's interval as shipped). A hidden flag shortens it for the test suite.
DEFAULT_INTERVAL: str = _ANALYSIS["interval"]
STEP_WEIGHTS: tuple[int, ...] = tuple(_ANALYSIS["stepWeights"])
FAILED_CHECKS_THRESHOLD: int = _ANALYSIS["threshold"]
SUCCESS_RATE_MIN: float = _BOUNDS["success-rate"]["min"]
LATENCY_P99_MAX_MS: float = _BOUNDS["latency-p99"]["max"]
BAD_ERROR_RATE = "0.3"
REFRESH_SECONDS = 0.25
#: The live view's lines fit this many columns (the indented message is cut to fit).
LINE_WIDTH = 100
INDENT = " " * 8
FINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


@dataclass(frozen=True)
class Release:
    """One change of the Deployment's pod template, and what canaryd should make of it."""

    version: str
    description: str
    annotations: dict[str, str]
    expected: Phase


RELEASES = (
    Release("v2", "healthy", {ANNOTATION_LATENCY_MS: "40"}, Phase.SUCCEEDED),
    Release(
        "v3",
        "30% of requests fail",
        {ANNOTATION_LATENCY_MS: "40", ANNOTATION_ERROR_RATE: BAD_ERROR_RATE},
        Phase.FAILED,
    ),
)


# ---------------------------------------------------------------------------
# What the demo applies


def crd_documents() -> list[dict[str, Any]]:
    return [d for d in data.documents("crd") if d.get("kind") == "CustomResourceDefinition"]


def template_documents() -> list[dict[str, Any]]:
    return [d for d in data.documents(*TEMPLATES_MANIFEST) if d.get("kind") == "MetricTemplate"]


def app_documents(interval: str) -> list[dict[str, Any]]:
    """The application team's objects as shipped (namespace, Gateway, Deployment, HTTPRoute, Canary).

    Only the Canary's analysis interval is set to ``interval``.
    """
    documents = data.documents(*APP_MANIFEST)
    _the_canary(documents)["spec"]["analysis"]["interval"] = interval
    return documents


def release_patch(release: Release) -> dict[str, Any]:
    """A strategic-merge patch of the pod template: a new image tag, VERSION and the sandbox annotations."""
    annotations: dict[str, str | None] = {ANNOTATION_ERROR_RATE: None, **release.annotations}
    return {
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"registry.example/payments-api:{release.version}",
                            "env": [{"name": "VERSION", "value": release.version}],
                        }
                    ]
                },
            }
        }
    }


# ---------------------------------------------------------------------------
# What the demo observes


@dataclass(frozen=True)
class MetricReading:
    name: str
    value: float | None
    verdict: str | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class Snapshot:
    """What a person watching the rollout sees at one moment."""

    seconds: float
    release: str
    phase: str
    canary_weight: int
    step: int
    steps: int
    failed_checks: int
    threshold: int
    metrics: tuple[MetricReading, ...]
    message: str = ""

    def key(self) -> tuple[Any, ...]:
        """Everything but the time: a new timeline entry is recorded only when this changes."""
        rounded = tuple(
            (m.name, None if m.value is None else round(m.value, 1), m.verdict) for m in self.metrics
        )
        return (
            self.release,
            self.phase,
            self.canary_weight,
            self.step,
            self.failed_checks,
            rounded,
            self.message,
        )


def snapshot_of(canary: dict[str, Any], release: str, seconds: float) -> Snapshot:
    spec = canary.get("spec", {})
    analysis = spec.get("analysis", {})
    status = canary.get("status") or {}
    readings = {m.get("name"): m for m in status.get("metrics") or []}
    metrics = []
    for check in analysis.get("metrics") or []:
        reading = readings.get(check["name"], {})
        bounds = check.get("thresholdRange") or {}
        metrics.append(
            MetricReading(
                name=check["name"],
                value=reading.get("value"),
                verdict=reading.get("verdict"),
                min=bounds.get("min"),
                max=bounds.get("max"),
            )
        )
    steps = len(analysis.get("stepWeights") or []) or 0
    message = ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing":
            message = str(condition.get("message") or condition.get("reason") or "")
    return Snapshot(
        seconds=round(seconds, 1),
        release=release,
        phase=str(status.get("phase") or "Pending"),
        canary_weight=int(status.get("canaryWeight") or 0),
        step=int(status.get("step") or 0),
        steps=steps,
        failed_checks=int(status.get("failedChecks") or 0),
        threshold=int(analysis.get("threshold") or 0),
        metrics=tuple(metrics),
        message=message,
    )


# ---------------------------------------------------------------------------
# How the demo shows it


def weight_bar(canary_weight: int, width: int = 20, fancy: bool = True) -> str:
    """The traffic split as a bar: primary on the left, canary on the right."""
    canary_cells = round(width * canary_weight / 100)
    primary_mark, canary_mark = ("█", "░") if fancy else ("#", ".")
    bar = primary_mark * (width - canary_cells) + canary_mark * canary_cells
    return f"primary {100 - canary_weight:3d}% [{bar}] {canary_weight:3d}% canary"


def metric_text(metric: MetricReading) -> str:
    unit = " ms" if "latency" in metric.name else ""
    value = "  --  " if metric.value is None else f"{metric.value:6.1f}"
    bounds = []
    if metric.min is not None:
        bounds.append(f">= {metric.min:g}")
    if metric.max is not None:
        bounds.append(f"<= {metric.max:g}{unit}")
    verdict = {"Pass": "ok", "Fail": "FAIL", "NoData": "no data", "Error": "error"}.get(
        metric.verdict or "", ""
    )
    return f"{metric.name} {value}{unit} (want {' and '.join(bounds)}) {verdict}".rstrip()


def render_lines(snapshot: Snapshot, fancy: bool = True) -> list[str]:
    """The live view of one moment, a few lines long."""
    step = f"step {snapshot.step}/{snapshot.steps}" if snapshot.steps else f"step {snapshot.step}"
    head = (
        f"[{snapshot.seconds:5.0f}s] {snapshot.release:<3} {snapshot.phase:<12} {step}  "
        f"failed checks {snapshot.failed_checks}/{snapshot.threshold}"
    )
    lines = [head, INDENT + weight_bar(snapshot.canary_weight, fancy=fancy)]
    lines.extend(INDENT + metric_text(m) for m in snapshot.metrics)
    if snapshot.message:
        lines.append(INDENT + snapshot.message[: LINE_WIDTH - len(INDENT)])
    return [line[:LINE_WIDTH] for line in lines]


def render_line(snapshot: Snapshot, fancy: bool = True) -> str:
    """The same moment as one line, for logs and pipes."""
    metrics = "; ".join(metric_text(m) for m in snapshot.metrics)
    step = f"step {snapshot.step}/{snapshot.steps}" if snapshot.steps else f"step {snapshot.step}"
    return (
        f"[{snapshot.seconds:5.0f}s] {snapshot.release:<3} {snapshot.phase:<12} {step} "
        f"{weight_bar(snapshot.canary_weight, width=10, fancy=fancy)}  "
        f"failed {snapshot.failed_checks}/{snapshot.threshold}  {metrics}"
    )


class LiveView:
    """Shows snapshots: redraws a block in place on a terminal, appends a line per change otherwise."""

    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.tty = enabled and out.isatty()
        encoding = (getattr(out, "encoding", None) or "").lower()
        self.fancy = "utf" in encoding
        self._drawn = 0

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        self._drawn = 0
        print(text, file=self.out, flush=True)

    def show(self, snapshot: Snapshot, changed: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            lines = render_lines(snapshot, fancy=self.fancy)
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            for line in lines:
                self.out.write("\x1b[2K" + line + "\n")
            self.out.flush()
            self._drawn = len(lines)
        elif changed:
            print(render_line(snapshot, fancy=self.fancy), file=self.out, flush=True)

    def settle(self) -> None:
        """Keep what is drawn and continue below it."""
        self._drawn = 0


# ---------------------------------------------------------------------------
# Running it


class DemoError(Exception):
    """Something the demo needs is missing or broke; the message says what."""


@dataclass
class Outcome:
    version: str
    description: str
    expected: str
    outcome: str
    seconds: float
    weights: list[int] = field(default_factory=list)
    failed_checks: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)

    @property
    def as_expected(self) -> bool:
        return self.outcome == self.expected


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    entries: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    _last_key: tuple[Any, ...] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def record(self, snapshot: Snapshot) -> bool:
        key = snapshot.key()
        if key == self._last_key:
            return False
        self._last_key = key
        self.entries.append(asdict(snapshot))
        return True

    def note(self, text: str) -> None:
        self.notes.append({"seconds": round(self.elapsed(), 1), "note": text})


@dataclass
class DemoSettings:
    interval: str = DEFAULT_INTERVAL
    release_timeout: float = 240.0
    json_output: bool = False


class Demo:
    """Drives one demo run against a started sandbox and controller."""

    def __init__(
        self, client: KubeClient, settings: DemoSettings, view: LiveView, timeline: Timeline
    ) -> None:
        self.client = client
        self.settings = settings
        self.view = view
        self.timeline = timeline

    async def apply(self, documents: Sequence[dict[str, Any]]) -> None:
        await create_all(self.client, documents)

    async def canary(self) -> dict[str, Any]:
        return await self.client.get(CANARIES, NAMESPACE, APP)

    async def wait_for(
        self,
        release: str,
        done: Callable[[Snapshot, dict[str, Any]], bool],
        timeout: float,
        previous_revision: str | None = None,
    ) -> Snapshot:
        """Show the Canary until ``done``; the previous run's final state is not shown as this release's."""
        deadline = time.monotonic() + timeout
        while True:
            canary = await self.canary()
            snapshot = snapshot_of(canary, release, self.timeline.elapsed())
            stale = (
                previous_revision is not None
                and snapshot.phase in FINAL_PHASES
                and (canary.get("status") or {}).get("revision") == previous_revision
            )
            if not stale:
                changed = self.timeline.record(snapshot)
                self.view.show(snapshot, changed)
            if done(snapshot, canary):
                self.view.settle()
                return snapshot
            if time.monotonic() > deadline:
                self.view.settle()
                raise DemoError(f"{release}: still {snapshot.phase} after {timeout:.0f}s")
            await asyncio.sleep(REFRESH_SECONDS)

    async def initialize(self) -> None:
        await self.wait_for(
            "v1",
            lambda s, _: s.phase == Phase.INITIALIZED,
            timeout=self.settings.release_timeout,
        )

    async def release(self, release: Release) -> Outcome:
        revision_before = ((await self.canary()).get("status") or {}).get("revision")
        self.timeline.note(f"release {release.version} ({release.description})")
        self.view.say(f"\n== {release.version}: {release.description}; expecting {release.expected.value}")
        await self.client.patch(
            DEPLOYMENTS, NAMESPACE, APP, release_patch(release), content_type=STRATEGIC_MERGE_PATCH
        )
        started = self.timeline.elapsed()
        weights: list[int] = []
        worst_checks = 0

        def finished(snapshot: Snapshot, canary: dict[str, Any]) -> bool:
            nonlocal worst_checks
            if snapshot.canary_weight and (not weights or weights[-1] != snapshot.canary_weight):
                weights.append(snapshot.canary_weight)
            worst_checks = max(worst_checks, snapshot.failed_checks)
            # Done once the new revision's run has ended, not on the previous run's final phase.
            status = canary.get("status") or {}
            return snapshot.phase in FINAL_PHASES and status.get("revision") != revision_before

        final = await self.wait_for(
            release.version,
            finished,
            timeout=self.settings.release_timeout,
            previous_revision=revision_before,
        )
        outcome = Outcome(
            version=release.version,
            description=release.description,
            expected=release.expected.value,
            outcome=final.phase,
            seconds=round(self.timeline.elapsed() - started, 1),
            weights=weights,
            failed_checks=max(worst_checks, final.failed_checks),
            metrics={m.name: m.value for m in final.metrics},
        )
        self.timeline.note(f"{release.version} {final.phase}")
        return outcome

    async def route_weights(self) -> dict[str, int]:
        route = await self.client.get(HTTP_ROUTES, NAMESPACE, APP)
        weights: dict[str, int] = {}
        for rule in route["spec"]["rules"]:
            for ref in rule.get("backendRefs") or []:
                weights[ref["name"]] = int(ref.get("weight", 1))
        return weights

    async def settled(self, timeout: float = 30.0) -> tuple[str, dict[str, int]]:
        """(the primary's version, the route weights) once all traffic is back on the primary.

        The controller writes status before it moves traffic, so the final phase can be
        visible a moment before the weights are.
        """
        deadline = time.monotonic() + timeout
        while True:
            weights = await self.route_weights()
            if weights.get(APP + CANARY_SUFFIX) == 0 or time.monotonic() > deadline:
                return await self.primary_version(), weights
            await asyncio.sleep(REFRESH_SECONDS)

    async def primary_version(self) -> str:
        primary = await self.client.get(DEPLOYMENTS, NAMESPACE, APP + PRIMARY_SUFFIX)
        for container in primary["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env") or []:
                if env.get("name") == "VERSION":
                    return str(env.get("value"))
        return "unknown"


def summary_lines(outcomes: Sequence[Outcome], primary_version: str, weights: dict[str, int]) -> list[str]:
    lines = ["", "Summary"]
    for outcome in outcomes:
        verb = {"Succeeded": "promoted", "Failed": "rolled back"}.get(outcome.outcome, outcome.outcome)
        steps = " -> ".join(f"{w}%" for w in outcome.weights) or "no traffic"
        readings = ", ".join(
            f"{name} {'--' if value is None else f'{value:.1f}'}" for name, value in outcome.metrics.items()
        )
        mark = "as expected" if outcome.as_expected else f"UNEXPECTED (wanted {outcome.expected})"
        lines.append(
            f"  {outcome.version} ({outcome.description}): {verb} after {outcome.seconds:.0f}s; "
            f"canary weights {steps}; failed checks {outcome.failed_checks}; last {readings}; {mark}"
        )
    split = ", ".join(f"{name} {weight}" for name, weight in weights.items())
    lines.append(f"  now: the primary serves {primary_version}; route weights {split}")
    return lines


async def run_demo(settings: DemoSettings, out: TextIO) -> int:
    from canaryd.sandbox.cluster import SandboxCluster

    view = LiveView(out, enabled=not settings.json_output)
    timeline = Timeline()
    outcomes: list[Outcome] = []
    error: str | None = None
    primary_version, weights = "unknown", dict[str, int]()
    view.say("Starting the sandbox cluster and Prometheus ...")
    async with SandboxCluster(with_prometheus=True) as cluster:
        if cluster.prometheus_url is None:
            raise DemoError("the sandbox started without Prometheus")
        view.say(f"  API server {cluster.api_url}, Prometheus {cluster.prometheus_url}")
        client = await KubeClient.connect(str(cluster.kubeconfig_path), user_agent="canaryd-demo")
        try:
            demo = Demo(client, settings, view, timeline)
            await demo.apply(crd_documents())
            await demo.apply(template_documents())
            await demo.apply(app_documents(settings.interval))
            timeline.note("applied CRDs, MetricTemplates, Gateway, Deployment, HTTPRoute and Canary")
            view.say("Applied the CRDs, the MetricTemplates in analysis/sandbox.yaml, and in namespace")
            view.say(f"  {NAMESPACE}: a Gateway, Deployment {APP} (v1), HTTPRoute {APP} and a Canary:")
            view.say(
                f"  steps {', '.join(f'{w}%' for w in STEP_WEIGHTS)} every {settings.interval}; "
                f"rollback after {FAILED_CHECKS_THRESHOLD} failed checks; "
                f"success-rate >= {SUCCESS_RATE_MIN:g}, latency-p99 <= {LATENCY_P99_MAX_MS:g} ms"
            )
            async with controller(cluster.kubeconfig_path, cluster.prometheus_url) as process:
                view.say("Started the controller (canaryd run); waiting for it to initialize the Canary ...")
                try:
                    await demo.initialize()
                    for release in RELEASES:
                        outcomes.append(await demo.release(release))
                    primary_version, weights = await demo.settled()
                except DemoError as exc:
                    error = str(exc)
                    view.say(f"\n{error}\ncontroller log (last lines):\n{process.log_tail()}")
        finally:
            await client.close()
    ok = (
        error is None
        and len(outcomes) == len(RELEASES)
        and all(o.as_expected for o in outcomes)
        and primary_version == RELEASES[0].version
        and weights.get(APP + CANARY_SUFFIX) == 0
    )
    if settings.json_output:
        report = {
            "ok": ok,
            "seconds": round(timeline.elapsed(), 1),
            "error": error,
            "outcomes": [asdict(o) | {"as_expected": o.as_expected} for o in outcomes],
            "primary_version": primary_version,
            "route_weights": weights,
            "notes": timeline.notes,
            "timeline": timeline.entries,
        }
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        for line in summary_lines(outcomes, primary_version, weights):
            view.say(line)
        view.say(
            f"Done in {timeline.elapsed():.0f}s: "
            + ("both outcomes as expected." if ok else "NOT as expected.")
        )
    return 0 if ok else 1


@contextlib.asynccontextmanager
async def controller(
    kubeconfig: str | os.PathLike[str], prometheus_url: str
) -> AsyncIterator[ControllerProcess]:
    """`canaryd run` against the sandbox as a child process, its log in a temporary file; stopped by PID."""
    with tempfile.TemporaryDirectory(prefix="canaryd-demo-") as workdir:
        process = ControllerProcess(kubeconfig, prometheus_url, Path(workdir) / "controller.log").start()
        try:
            await asyncio.sleep(0.2)
            if not process.alive():
                code = process.returncode
                raise DemoError(f"the controller exited at once ({code}):\n{process.log_tail()}")
            yield process
        finally:
            await asyncio.to_thread(process.stop, 10.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the timeline as JSON instead of the live view"
    )
    # The test suite runs the same demo at a faster pace.
    parser.add_argument("--interval", default=DEFAULT_INTERVAL, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    try:
        interval = str(args.interval)
        parse_duration(interval)
    except ValueError as exc:
        print(f"canaryd demo: bad --interval: {exc}", file=sys.stderr)
        return 2
    settings = DemoSettings(interval=interval, json_output=bool(args.json))
    try:
        return asyncio.run(_stoppable(run_demo(settings, sys.stdout)))
    except (DemoError, PrometheusNotInstalledError, PrometheusStartError) as exc:
        print(f"canaryd demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        print("canaryd demo: stopped", file=sys.stderr)
        return 143


async def _stoppable(demo: Coroutine[Any, Any, int]) -> int:
    """Run the demo so that SIGTERM stops it like Ctrl-C, stopping the controller, Prometheus and sandbox."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await demo
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
