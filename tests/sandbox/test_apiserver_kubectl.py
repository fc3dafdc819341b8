"""Conformance: the real kubectl (1.32) works against the sandbox for everyday commands."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.fixtures.sandbox import deployment_manifest, service_manifest
from tests.sandbox.test_apiserver_crd import WIDGET_CRD


def as_yaml(*objects: dict) -> str:
    return yaml.safe_dump_all(list(objects))


def table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.strip().splitlines()]


async def test_create_get_and_get_variants(sandbox_api: SandboxApiServer, kubectl) -> None:
    await kubectl(
        "create",
        "-f",
        "-",
        input=as_yaml(deployment_manifest("web", replicas=2), service_manifest("web")),
        check=True,
    )
    rows = table((await kubectl("get", "deployments", check=True)).stdout)
    assert rows == [["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["web", "0/2", "0", "0", rows[1][4]]]
    wide = table((await kubectl("get", "deploy", "-o", "wide", check=True)).stdout)
    assert wide[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"] and wide[1][-3:] == [
        "app",
        "nginx:1.25",
        "app=web",
    ]
    services = table((await kubectl("get", "svc", "-A", check=True)).stdout)
    assert services[0][:4] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP"]
    assert services[1][:3] == ["default", "web", "ClusterIP"] and services[1][5] == "8080/TCP"
    fetched = await kubectl.json("get", "deployment", "web")
    assert fetched["spec"]["replicas"] == 2 and fetched["metadata"]["uid"]
    listed = await kubectl.json("get", "deployments", "-l", "app=web")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
    none = await kubectl("get", "deployments", "--field-selector", "metadata.name=other")
    assert none.returncode == 0 and "No resources found" in none.stderr
    namespaces = table((await kubectl("get", "ns", check=True)).stdout)
    assert namespaces[1][:2] == ["default", "Active"]


async def test_apply_creates_then_updates_with_strategic_merge(
    sandbox_api: SandboxApiServer, kubectl
) -> None:
    manifest = deployment_manifest("web")
    first = await kubectl("apply", "-f", "-", input=as_yaml(manifest), check=True)
    assert first.stdout.strip() == "deployment.apps/web created"
    manifest["spec"]["replicas"] = 3
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    second = await kubectl("apply", "-f", "-", input=as_yaml(manifest), check=True)
    assert second.stdout.strip() == "deployment.apps/web configured"
    assert second.stderr == ""
    stored = sandbox_api.store.get("deployments", "web", "default")
    assert stored["spec"]["replicas"] == 3
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]
    patches = sandbox_api.audit.entries(verb="patch", resource="deployments")
    assert [p.patch_type for p in patches] == ["application/strategic-merge-patch+json"]
    unchanged = await kubectl("apply", "-f", "-", input=as_yaml(manifest), check=True)
    assert unchanged.stdout.strip() == "deployment.apps/web unchanged"


async def test_patch_annotate_label_scale_set_image(sandbox_api: SandboxApiServer, kubectl) -> None:
    sandbox_api.store.create("deployments", deployment_manifest("web"))
    await kubectl("annotate", "deployment", "web", "team=payments", check=True)
    await kubectl("label", "deployment", "web", "tier=backend", check=True)
    await kubectl("scale", "deployment", "web", "--replicas=4", check=True)
    await kubectl("set", "image", "deployment/web", "app=nginx:1.27", check=True)
    await kubectl(
        "patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"minReadySeconds":5}}', check=True
    )
    await kubectl(
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        '[{"op":"test","path":"/spec/replicas","value":4},{"op":"add","path":"/spec/paused","value":true}]',
        check=True,
    )
    stored = sandbox_api.store.get("deployments", "web", "default")
    assert stored["metadata"]["annotations"]["team"] == "payments"
    assert stored["metadata"]["labels"]["tier"] == "backend"
    assert (
        stored["spec"]["replicas"] == 4
        and stored["spec"]["minReadySeconds"] == 5
        and stored["spec"]["paused"]
    )
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    failed = await kubectl(
        "patch", "deployment", "web", "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":1}]'
    )
    assert failed.returncode != 0
    assert "testing value /spec/replicas failed" in failed.stderr
    overwrite = await kubectl("annotate", "deployment", "web", "team=other")
    assert overwrite.returncode != 0 and "--overwrite is false" in overwrite.stderr


async def test_delete_waits_until_gone(sandbox_api: SandboxApiServer, kubectl) -> None:
    sandbox_api.store.create("deployments", deployment_manifest("web"))
    result = await kubectl("delete", "deployment", "web", check=True)
    assert result.stdout.strip() == 'deployment.apps "web" deleted'
    missing = await kubectl("get", "deployment", "web")
    assert missing.returncode == 1
    assert 'deployments.apps "web" not found' in missing.stderr


async def test_get_watch_streams_changes(sandbox_api: SandboxApiServer, kubectl) -> None:
    store = sandbox_api.store
    store.create("deployments", deployment_manifest("web"))
    process = await kubectl.spawn("get", "deployments", "-w", "--output-watch-events")
    try:
        assert process.stdout is not None
        header = await asyncio.wait_for(process.stdout.readline(), 10)
        assert header.split() == [b"EVENT", b"NAME", b"READY", b"UP-TO-DATE", b"AVAILABLE", b"AGE"]
        first = await asyncio.wait_for(process.stdout.readline(), 10)
        assert first.split()[:3] == [b"ADDED", b"web", b"0/1"]
        store.patch("deployments", "web", {"spec": {"replicas": 3}}, "default")
        modified = await asyncio.wait_for(process.stdout.readline(), 10)
        assert modified.split()[:3] == [b"MODIFIED", b"web", b"0/3"]
        store.delete("deployments", "web", "default")
        deleted = await asyncio.wait_for(process.stdout.readline(), 10)
        assert deleted.split()[:2] == [b"DELETED", b"web"]
    finally:
        process.terminate()
        await process.wait()


async def test_crd_then_custom_resources_with_printer_columns(sandbox_api: SandboxApiServer, kubectl) -> None:
    await kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD), check=True)
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"color": "red"},
    }
    await kubectl("apply", "-f", "-", input=json.dumps(widget), check=True)
    rows = table((await kubectl("get", "widgets", check=True)).stdout)
    assert rows[0] == ["NAME", "COLOR", "SIZE", "READY", "AGE"]
    assert rows[1][:3] == ["w1", "red", "3"] and len(rows[1]) == 4  # no Ready condition yet: an empty cell
    sandbox_api.store.patch(
        "widgets",
        "w1",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        "default",
        subresource="status",
    )
    rows = table((await kubectl("get", "widgets", check=True)).stdout)
    assert rows[1][:4] == ["w1", "red", "3", "True"]
    widget["spec"]["size"] = 5
    await kubectl("apply", "-f", "-", input=json.dumps(widget), check=True)
    assert sandbox_api.store.get("widgets", "w1", "default")["spec"]["size"] == 5
    assert (
        sandbox_api.audit.entries(verb="patch", resource="widgets")[-1].patch_type
        == "application/merge-patch+json"
    )
    invalid = await kubectl("apply", "-f", "-", input=json.dumps({**widget, "spec": {"color": "green"}}))
    assert invalid.returncode != 0
    assert 'The Widget "w1" is invalid: spec.color: Unsupported value: "green"' in invalid.stderr
    unknown_field = await kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({**widget, "metadata": {"name": "w2"}, "spec": {"color": "red", "colour": "x"}}),
    )
    assert unknown_field.returncode != 0 and 'unknown field "spec.colour"' in unknown_field.stderr
    await kubectl("get", "wd", "w1", check=True)  # short name from the CRD


async def test_unknown_resource_type(kubectl) -> None:
    result = await kubectl("get", "flibbertigibbets")
    assert result.returncode != 0
    assert 'the server doesn\'t have a resource type "flibbertigibbets"' in result.stderr


async def test_read_only_token_gets_forbidden_over_tls(kubectl, tmp_path) -> None:
    # kubectl sends bearer tokens only over TLS, so this server listens with a self-signed certificate.
    async with SandboxApiServer(tls=True) as server:
        server.add_read_only_token("viewer-token", "viewer")
        server.store.create("deployments", deployment_manifest("web"))
        viewer = type(kubectl)(
            server.write_kubeconfig(tmp_path / "viewer", token="viewer-token"), tmp_path / "viewer-cache"
        )
        listed = await viewer("get", "deployments")
        assert listed.returncode == 0 and "web" in listed.stdout
        denied = await viewer("scale", "deployment", "web", "--replicas=2")
        assert denied.returncode != 0
        assert (
            'User "viewer" cannot patch resource "deployments" in API group "apps" in the namespace "default"'
            in denied.stderr
        )
        assert server.store.get("deployments", "web", "default")["spec"]["replicas"] == 1
        stranger = type(kubectl)(
            server.write_kubeconfig(tmp_path / "stranger", token="wrong"), tmp_path / "c2"
        )
        refused = await stranger("get", "deployments")
        assert refused.returncode != 0 and "You must be logged in to the server" in refused.stderr


async def test_impersonated_user_rights_over_plain_http(sandbox_api: SandboxApiServer, kubectl) -> None:
    sandbox_api.add_user(
        "operator-token", "operator", ["get *", "list *", "watch *", "patch deployments/status"]
    )
    sandbox_api.store.create("deployments", deployment_manifest("web"))
    status_patch = await kubectl(
        "--as",
        "operator",
        "patch",
        "deployment",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"replicas":1}}',
    )
    assert status_patch.returncode == 0, status_patch.stderr
    spec_patch = await kubectl(
        "--as", "operator", "patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":3}}'
    )
    assert spec_patch.returncode != 0 and "is forbidden" in spec_patch.stderr
    audit = sandbox_api.audit.entries(user="operator", verb="patch")
    assert [(e.subresource, e.code) for e in audit] == [("status", 200), (None, 403)]


def missing_or_different(expected: object, actual: object, path: str = "") -> list[str]:
    """Fields of `expected` (kubectl's client-side object) that the server did not store as given."""
    problems: list[str] = []
    if isinstance(expected, dict):
        for key, value in expected.items():
            if value in ({}, None, []):
                continue
            if not isinstance(actual, dict) or key not in actual:
                problems.append(f"{path}.{key} missing")
            else:
                problems += missing_or_different(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path} length"]
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            problems += missing_or_different(left, right, f"{path}[{index}]")
    elif expected != actual:
        problems.append(f"{path}: {expected!r} != {actual!r}")
    return problems


@pytest.mark.parametrize(
    "command",
    [
        ["namespace", "team"],
        ["configmap", "settings", "--from-literal=a=b", "--from-literal=c=d"],
        ["secret", "generic", "auth", "--from-literal=token=s3cret"],
        ["deployment", "web", "--image=nginx:1.25", "--replicas=3", "--port=8080"],
        ["deployment", "idle", "--image=nginx:1.25", "--replicas=0"],
        ["service", "clusterip", "web", "--tcp=80:8080"],
    ],
    ids=lambda command: command[0] if command[0] != "secret" else "secret",
)
async def test_kubectl_create_subcommands_send_protobuf_that_is_decoded(kubectl, command: list[str]) -> None:
    client_side = await kubectl.json("create", *command, "--dry-run=client")
    created = await kubectl.json("create", *command)
    assert missing_or_different(client_side, created) == []
    assert created["metadata"]["uid"]


async def test_server_side_apply_rollout_restart_and_replace(sandbox_api: SandboxApiServer, kubectl) -> None:
    manifest = deployment_manifest("web")
    applied = await kubectl("apply", "--server-side", "-f", "-", input=as_yaml(manifest), check=True)
    assert applied.stdout.strip() == "deployment.apps/web serverside-applied"
    manifest["spec"]["replicas"] = 2
    await kubectl("apply", "--server-side", "-f", "-", input=as_yaml(manifest), check=True)
    assert sandbox_api.store.get("deployments", "web", "default")["spec"]["replicas"] == 2
    generation = sandbox_api.store.get("deployments", "web", "default")["metadata"]["generation"]
    await kubectl("rollout", "restart", "deployment/web", check=True)
    restarted = sandbox_api.store.get("deployments", "web", "default")
    assert "kubectl.kubernetes.io/restartedAt" in restarted["spec"]["template"]["metadata"]["annotations"]
    assert restarted["metadata"]["generation"] == generation + 1
    current = await kubectl("get", "deployment", "web", "-o", "yaml", check=True)
    replaced = await kubectl(
        "replace", "-f", "-", input=current.stdout.replace("replicas: 2", "replicas: 5"), check=True
    )
    assert replaced.stdout.strip() == "deployment.apps/web replaced"
    assert sandbox_api.store.get("deployments", "web", "default")["spec"]["replicas"] == 5
    stale = await kubectl("replace", "-f", "-", input=current.stdout)
    assert stale.returncode != 0 and "the object has been modified" in stale.stderr
