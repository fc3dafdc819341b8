"""`canaryd demo`: what a newcomer sees, and that the demo really rolls out and rolls back.

The end-to-end test runs the real demo (sandbox, real Prometheus, the
controller as a child process) at a shorter analysis interval than the
default, and checks the timeline it prints: the healthy release walks every
step and is promoted, the bad one is rolled back after the failed-check
threshold, and the route ends with all traffic on the primary.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from canaryd import data
from canaryd.cli.demo import (
    APP,
    APP_MANIFEST,
    DEFAULT_INTERVAL,
    FAILED_CHECKS_THRESHOLD,
    NAMESPACE,
    RELEASES,
    STEP_WEIGHTS,
    LiveView,
    MetricReading,
    Snapshot,
    app_documents,
    release_patch,
    render_line,
    render_lines,
    snapshot_of,
    weight_bar,
)
from tests.fixtures.demo import run_demo_json

REPO = Path(__file__).resolve().parents[2]


def _snapshot(weight: int = 25, checks: int = 0, value: float | None = 99.5) -> Snapshot:
    return Snapshot(
        seconds=12.0,
        release="v2",
        phase="Progressing",
        canary_weight=weight,
        step=2,
        steps=3,
        failed_checks=checks,
        threshold=2,
        metrics=(
            MetricReading("success-rate", value, "Pass", 99.0, None),
            MetricReading("latency-p99", 71.0, "Pass", None, 200.0),
        ),
    )


def test_weight_bar_shows_the_split_between_primary_and_canary() -> None:
    assert weight_bar(25, width=20, fancy=False) == "primary  75% [###############.....]  25% canary"
    assert weight_bar(0, width=10, fancy=False) == "primary 100% [##########]   0% canary"
    assert weight_bar(100, width=4, fancy=False) == "primary   0% [....] 100% canary"


def test_a_line_shows_phase_step_weight_checks_and_each_metric_against_its_threshold() -> None:
    line = render_line(_snapshot(), fancy=False)
    assert "v2" in line and "Progressing" in line and "step 2/3" in line
    assert "failed 0/2" in line
    assert "success-rate   99.5 (want >= 99) ok" in line
    assert "latency-p99   71.0 ms (want <= 200 ms) ok" in line
    no_data = render_line(_snapshot(value=None), fancy=False)
    assert "success-rate   --" in no_data


def test_snapshot_reads_the_canary_as_the_controller_writes_it() -> None:
    canary = {
        "spec": {
            "analysis": {
                "threshold": 2,
                "stepWeights": [10, 25, 50],
                "metrics": [{"name": "success-rate", "thresholdRange": {"min": 99}}],
            }
        },
        "status": {
            "phase": "Progressing",
            "canaryWeight": 10,
            "step": 1,
            "failedChecks": 1,
            "metrics": [{"name": "success-rate", "verdict": "Fail", "value": 70.2}],
        },
    }
    snapshot = snapshot_of(canary, "v3", 3.0)
    assert (snapshot.phase, snapshot.canary_weight, snapshot.step, snapshot.steps) == (
        "Progressing",
        10,
        1,
        3,
    )
    assert snapshot.failed_checks == 1 and snapshot.threshold == 2
    assert snapshot.metrics == (MetricReading("success-rate", 70.2, "Fail", 99, None),)
    assert snapshot_of({"spec": {}}, "v1", 0).phase == "Pending"


def test_the_live_view_fits_100_columns_even_with_a_long_message() -> None:
    snapshot = dataclasses.replace(_snapshot(), message="revision 7d9f8c6b5 " + "x" * 300)
    lines = render_lines(snapshot, fancy=True)
    assert lines[-1].startswith("        revision 7d9f8c6b5 x")
    assert max(len(line) for line in lines) <= 100


def test_live_view_appends_a_line_per_change_when_not_a_terminal() -> None:
    out = io.StringIO()
    view = LiveView(out, enabled=True)
    view.show(_snapshot(), changed=True)
    view.show(_snapshot(), changed=False)
    view.show(_snapshot(weight=50), changed=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\x1b[" not in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_view_redraws_in_place_on_a_terminal() -> None:
    out = _Terminal()
    view = LiveView(out, enabled=True)
    view.show(_snapshot(), changed=True)
    first = out.getvalue()
    view.show(_snapshot(weight=50), changed=True)
    redraw = out.getvalue()[len(first) :]
    block = len(first.splitlines())
    assert redraw.startswith(f"\x1b[{block}F"), "the cursor goes back over the previous block"
    assert "50%" in redraw


def test_json_mode_shows_nothing_live() -> None:
    out = io.StringIO()
    view = LiveView(out, enabled=False)
    view.say("hello")
    view.show(_snapshot(), changed=True)
    assert out.getvalue() == ""


def test_the_app_lists_both_backends_and_the_bad_release_sets_the_error_rate() -> None:
    documents = {d["kind"]: d for d in app_documents("10s")}
    (rule,) = documents["HTTPRoute"]["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [
        (f"{APP}-primary", 100),
        (f"{APP}-canary", 0),
    ]
    assert documents["Canary"]["spec"]["analysis"]["stepWeights"] == list(STEP_WEIGHTS)
    good, bad = (release_patch(r)["spec"]["template"]["metadata"]["annotations"] for r in RELEASES)
    assert good["sandbox.canaryd.io/error-rate"] is None
    assert bad["sandbox.canaryd.io/error-rate"] == "0.3"


@pytest.mark.e2e
@pytest.mark.prometheus
def test_demo_promotes_the_good_release_and_rolls_back_the_bad_one() -> None:
    started = time.monotonic()
    report = run_demo_json([sys.executable, "-m", "canaryd.cli.main"], cwd=REPO)
    seconds = time.monotonic() - started
    good, bad = report["outcomes"]
    assert (good["version"], good["outcome"]) == ("v2", "Succeeded")
    assert good["weights"] == list(STEP_WEIGHTS), "the healthy release walks every step"
    assert (bad["version"], bad["outcome"]) == ("v3", "Failed")
    assert bad["failed_checks"] >= FAILED_CHECKS_THRESHOLD
    assert max(bad["weights"], default=0) < STEP_WEIGHTS[-1], "the bad release never reached the last step"
    assert report["primary_version"] == "v2"
    assert report["route_weights"] == {f"{APP}-primary": 100, f"{APP}-canary": 0}
    phases = [entry["phase"] for entry in report["timeline"]]
    assert "Progressing" in phases and "Succeeded" in phases and "Failed" in phases
    print(f"demo at a 2s interval took {seconds:.0f}s")


def test_the_hand_driven_sandbox_app_in_docs_is_the_one_the_demo_ships_and_applies() -> None:
    docs_copy = REPO / "docs" / "sandbox-app.yaml"
    shipped = Path(str(data.path(*APP_MANIFEST)))
    assert docs_copy.resolve() == shipped.resolve(), "docs/sandbox-app.yaml links to the packaged file"
    documents = [doc for doc in yaml.safe_load_all(shipped.read_text()) if doc]
    assert documents[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    assert app_documents(DEFAULT_INTERVAL) == documents


def test_a_faster_demo_changes_only_the_canarys_interval() -> None:
    default, fast = app_documents(DEFAULT_INTERVAL), app_documents("2s")
    assert [d["kind"] for d in fast] == [d["kind"] for d in default]
    for before, after in zip(default, fast, strict=True):
        if after["kind"] == "Canary":
            assert after["spec"]["analysis"]["interval"] == "2s"
            after["spec"]["analysis"]["interval"] = DEFAULT_INTERVAL
        assert after == before


def test_without_prometheus_the_demo_says_how_to_install_it() -> None:
    only_python = str(Path(sys.executable).parent)
    result = subprocess.run(
        [sys.executable, "-m", "canaryd.cli.main", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": only_python, "HOME": str(REPO)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "apt-get install" in result.stderr and "prometheus" in result.stderr
