"""`canaryd backtest` as a user runs it: files in, a table or JSON out, one line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from canaryd.cli.backtest import InputError, parse_time
from canaryd.cli.main import main
from canaryd.sandbox.prometheus_server import PrometheusServer
from tests.fixtures.scenarios import RUN_MINUTES, judged_canary, openmetrics, reduced_corpus

START = 1_700_000_040
ROOT = Path(__file__).resolve().parents[2]
ERRORS = next(s for s in reduced_corpus() if s.name == "errors")


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: str) -> Iterator[PrometheusServer]:
    server = PrometheusServer()
    try:
        server.backfill("\n".join(openmetrics([ERRORS], START)) + "\n")
        server.start()
        yield server
    finally:
        server.close()


def _canary_file(tmp_path: Path, judge: str = "sequential") -> Path:
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(judged_canary(ERRORS, judge)))
    return path


def _args(server: PrometheusServer, *files: Path, output: str = "text") -> list[str]:
    args = ["backtest"]
    for file in files:
        args += ["-f", str(file)]
    return [*args, "--prometheus-url", server.url, "--start", str(START),
            "--end", f"{START + RUN_MINUTES * 60}", "-o", output]  # fmt: skip


def test_the_table_lists_each_check_and_ends_with_the_decision(
    prometheus: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_args(prometheus, _canary_file(tmp_path), ROOT / "analysis" / "sandbox.yaml"))
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["TIME", "METRIC", "VERDICT", "CANARY", "PRIMARY"]
    assert any(line.startswith("2023-11-14T22:15:00Z  error-rate") and " fail " in line for line in lines)
    assert lines[-1].startswith(
        "Decision: Failed at 2023-11-14T22:15:00Z (1m after the start): CriticalMetricFailed: error-rate="
    )


def test_json_output_has_the_documented_shape(
    prometheus: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_args(prometheus, _canary_file(tmp_path, "thresholds"), ROOT / "analysis" / "sandbox.yaml",
                      output="json"))  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["decision"] == "Failed" and document["decidedAt"].endswith("Z")
    assert {check["metric"] for check in document["checks"]} == {"success-rate", "latency-p99"}
    first = document["checks"][0]
    assert set(first) >= {"time", "metric", "verdict", "canary", "primary"}
    assert first["primary"] is None  # a fixed threshold looks at the canary only


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    canary = _canary_file(tmp_path)
    url = "http://127.0.0.1:1"
    cases = {
        "no template": (["-f", str(canary)], "MetricTemplate canaryd-system/error-rate is not in the files"),
        "no canary": (["-f", str(ROOT / "analysis" / "sandbox.yaml")], "exactly one Canary (found none)"),
        "missing file": (["-f", str(tmp_path / "nope.yaml")], "nope.yaml: No such file"),
    }
    invalid = tmp_path / "invalid.yaml"
    document = judged_canary(ERRORS, "sequential")
    document["spec"]["analysis"]["stepWeights"] = [50, 10]  # type: ignore[index]
    invalid.write_text(yaml.safe_dump(document))
    cases["invalid"] = (["-f", str(invalid)], "Canary/app is invalid: spec.analysis")
    for name, (files, message) in cases.items():
        code = main(["backtest", *files, "--prometheus-url", url, "--start", "now-1h", "--end", "now"])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and err.startswith("canaryd backtest: ") and message in err, (name, err)
    code = main(["backtest", "-f", str(canary), "--prometheus-url", url, "--start", "now", "--end", "now-1h"])
    assert code == 2 and "--end must be after --start" in capsys.readouterr().err


def test_times_may_be_rfc3339_unix_or_relative_to_now() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2026-03-01T10:00:00Z", now) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert parse_time("1772359200", now) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert parse_time("now-2h", now) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert parse_time("now", now) == now
    with pytest.raises(InputError, match="not a time"):
        parse_time("yesterday", now)


def test_the_subcommand_is_listed_in_canaryd_help() -> None:
    out = subprocess.run([sys.executable, "-m", "canaryd.cli.main", "--help"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "backtest" in out and "replay a Canary's analysis over past Prometheus data" in out
