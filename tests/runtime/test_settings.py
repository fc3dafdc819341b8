"""`canaryd run` configuration: a flag beats its CANARYD_* variable, which beats the default."""

from __future__ import annotations

import argparse
import logging

import pytest
import structlog

from canaryd.cli import run
from canaryd.runtime.settings import Settings, parse_address


@pytest.fixture(autouse=True)
def _restore_logging():
    """`canaryd run` configures logging for the process; put the defaults back for the next tests."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def parse(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    return run.settings_from(parser.parse_args(list(argv)))


def test_defaults(monkeypatch):
    for name in (
        "CANARYD_PROMETHEUS_URL",
        "CANARYD_LEADER_ELECT",
        "CANARYD_NAMESPACES",
        "CANARYD_KUBECONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = parse()
    assert settings.kubeconfig is None  # in-cluster configuration
    assert settings.leader_elect is False
    assert settings.namespaces == []
    assert (settings.health_address, settings.metrics_address) == (":8081", ":8080")
    assert settings.max_concurrent_runs == 0


def test_environment_over_default_and_flag_over_environment(monkeypatch):
    monkeypatch.setenv("CANARYD_PROMETHEUS_URL", "http://prom.env:9090")
    monkeypatch.setenv("CANARYD_NAMESPACES", "payments, shop")
    monkeypatch.setenv("CANARYD_LEADER_ELECT", "true")
    monkeypatch.setenv("CANARYD_MAX_CONCURRENT_RUNS", "3")
    from_env = parse()
    assert from_env.prometheus_url == "http://prom.env:9090"
    assert from_env.namespaces == ["payments", "shop"]
    assert from_env.leader_elect is True and from_env.max_concurrent_runs == 3
    from_flags = parse("--prometheus-url", "http://prom.flag:9090", "--no-leader-elect", "--namespaces", "a")
    assert from_flags.prometheus_url == "http://prom.flag:9090"
    assert from_flags.leader_elect is False and from_flags.namespaces == ["a"]
    assert from_flags.max_concurrent_runs == 3


def test_install_manifest_variable_names(monkeypatch):
    monkeypatch.setenv("CANARYD_HEALTH_ADDRESS", "0.0.0.0:8081")
    monkeypatch.setenv("CANARYD_METRICS_ADDR", "0.0.0.0:9090")
    monkeypatch.setenv("CANARYD_LEADER_ELECTION_NAMESPACE", "ops")
    monkeypatch.setenv("CANARYD_LEADER_ELECTION_IDENTITY", "canaryd-7f9c")
    settings = Settings()
    assert settings.health_address == "0.0.0.0:8081" and settings.metrics_address == "0.0.0.0:9090"
    assert settings.leader_election_namespace == "ops" and settings.leader_election_identity == "canaryd-7f9c"


def test_bad_settings_are_refused_with_a_message(capsys):
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    code = run.main(parser.parse_args(["--lease-duration", "1", "--renew-deadline", "5"]))
    assert code == 2
    assert "lease duration" in capsys.readouterr().err


def test_addresses():
    assert parse_address(":8080") == ("0.0.0.0", 8080)
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("0")[1] == -1
    with pytest.raises(ValueError):
        parse_address("nonsense")


def test_unreachable_configuration_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    missing = tmp_path / "nope"
    code = run.main(
        parser.parse_args(["--kubeconfig", str(missing), "--health-address", "0", "--metrics-address", "0"])
    )
    assert code == 1
    assert f"canaryd run: kubeconfig {missing} does not exist" in capsys.readouterr().err
    code = run.main(parser.parse_args(["--health-address", "0", "--metrics-address", "0"]))
    assert code == 1
    assert "pass --kubeconfig, or set CANARYD_KUBECONFIG or KUBECONFIG" in capsys.readouterr().err
