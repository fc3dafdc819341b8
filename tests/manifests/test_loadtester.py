"""The load tester's manifests: hardened, single, probed, with settings `canaryd loadtest` accepts."""

from __future__ import annotations

import argparse

import pytest

from canaryd.cli import loadtest as loadtest_command
from canaryd.loadtest.settings import LoadTestSettings, parse_address
from tests.manifests.rendering import MANIFESTS, render


def _objects() -> dict[str, dict]:  # type: ignore[type-arg]
    return {obj["kind"]: obj for obj in render(MANIFESTS / "loadtester")}


def test_one_hardened_replica_with_no_api_token() -> None:
    deployment = _objects()["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["canaryd", "loadtest"]
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False and hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]["limits"]) >= {"memory", "cpu"}


def test_the_service_reaches_the_pods_port(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = _objects()
    service, deployment = objects["Service"], objects["Deployment"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "canaryd-system"

    known = {f"CANARYD_LOADTEST_{name.upper()}" for name in LoadTestSettings.model_fields}
    for variable in container["env"]:
        assert variable["name"] in known, f"{variable['name']} is not a load tester setting"
        monkeypatch.setenv(variable["name"], variable["value"])
    parser = argparse.ArgumentParser()
    loadtest_command.add_arguments(parser)
    settings = loadtest_command.settings_from(parser.parse_args([]))
    assert parse_address(settings.address)[1] == ports[port["targetPort"]]
    assert settings.namespaces and settings.test_hosts == []
