"""canaryd's alerts fire when a platform team needs them to, and stay quiet otherwise.

The PrometheusRule in manifests/prometheus is rendered with kustomize, its
groups are written out as a plain rules file, and Debian's `promtool test
rules` runs the cases in alerts_test.yaml against it: controller down or never
scraped, no leader, reconcile errors, a Canary stuck in one phase (also across
a failover, and not for a standby's stale gauges), progress stalled, analysis
errors, a rollback.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.api.constants import Phase
from canaryd.sandbox.prometheus_server import INSTALL_HINT
from tests.manifests.rendering import MANIFESTS, render

CASES = Path(__file__).with_name("alerts_test.yaml")
RULES_FILE = "canaryd-rules.yaml"
#: What the issue asks to be alerted on, by alert name.
REQUIRED_ALERTS = {
    "CanarydControllerDown",
    "CanarydReconcileErrors",
    "CanaryStuckInPhase",
    "CanaryAnalysisErrors",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(f"promtool is missing. {INSTALL_HINT}", pytrace=False)
    return found


def _rule_object() -> dict[str, Any]:
    (rule,) = [o for o in render(MANIFESTS / "prometheus") if o["kind"] == "PrometheusRule"]
    return rule


def _alerts(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def test_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    rule = _rule_object()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(CASES, tmp_path / CASES.name)

    checked = subprocess.run(
        [_promtool(), "check", "rules", RULES_FILE], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [_promtool(), "test", "rules", CASES.name], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_required_or_has_a_case_where_it_fires() -> None:
    names = {alert["alert"] for alert in _alerts(_rule_object())}
    assert names >= REQUIRED_ALERTS
    cases = yaml.safe_load(CASES.read_text())
    fired = {
        check["alertname"]
        for case in cases["tests"]
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    quiet = {
        check["alertname"]
        for case in cases["tests"]
        for check in case.get("alert_rule_test", [])
        if not check.get("exp_alerts")
    }
    assert names <= fired, f"alerts with no case where they fire: {sorted(names - fired)}"
    assert names <= quiet, f"alerts with no case where they stay quiet: {sorted(names - quiet)}"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for alert in _alerts(_rule_object()):
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert alert["annotations"]["description"].strip(), alert["alert"]


def test_stuck_phase_alert_names_only_phases_that_exist() -> None:
    (stuck,) = [a for a in _alerts(_rule_object()) if a["alert"] == "CanaryStuckInPhase"]
    expr = stuck["expr"]
    listed = expr.split('phase=~"', 1)[1].split('"', 1)[0].split("|")
    known = {phase.value for phase in Phase} | {"Finalizing", "Finalising"}
    assert set(listed) <= known, set(listed) - known
    # Phases at rest are never "stuck"; Progressing has its own alert (weight not moving).
    assert not {"Initialized", "Succeeded", "Failed", "Progressing"} & set(listed)
