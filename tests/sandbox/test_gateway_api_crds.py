"""The sandbox serves the Gateway API kinds from the upstream CRDs, as a cluster with the standard channel.

Clients that only know a real cluster (kubectl, Traefik's client-go
informers, an install script applying Gateway API's standard-install) find
CustomResourceDefinitions, Established, of the release the project pins
(cluster/go/gateway-api/go.mod, what Traefik 3.7 is built against), and can
apply the upstream files over them, client-side and server-side, as they
would on a cluster that has them already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from canaryd.sandbox.server import gateway_api
from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.store import ObjectStore
from cluster import build
from tests.fixtures.sandbox import Kubectl

REPO = Path(__file__).resolve().parents[2]
GATEWAY_KINDS = {
    "BackendTLSPolicy", "GatewayClass", "Gateway", "GRPCRoute", "HTTPRoute", "ListenerSet", "ReferenceGrant",
    "TCPRoute", "TLSRoute", "UDPRoute",
}  # fmt: skip


def test_the_packaged_crds_are_the_standard_channel_of_the_pinned_release() -> None:
    assert build.gateway_api_version() == gateway_api.VERSION
    checked = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "vendor_gateway_api.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stderr
    crds = gateway_api.crds()
    assert {crd["spec"]["names"]["kind"] for crd in crds} == GATEWAY_KINDS
    for crd in crds:
        annotations = crd["metadata"]["annotations"]
        assert annotations["gateway.networking.k8s.io/bundle-version"] == gateway_api.VERSION
        assert annotations["gateway.networking.k8s.io/channel"] == "standard"


def test_a_store_starts_with_them_installed_or_without_them() -> None:
    store = ObjectStore()
    names = {c["metadata"]["name"] for c in store.list("customresourcedefinitions")[0]}
    assert names == {c["metadata"]["name"] for c in gateway_api.crds()}
    served = {(t.kind, t.version) for t in store.registry.all() if t.group == "gateway.networking.k8s.io"}
    # Traefik 3.7 lists these versions; GRPCRoute has no v1beta1 any more, ReferenceGrant gained v1.
    assert {("HTTPRoute", "v1"), ("HTTPRoute", "v1beta1"), ("GRPCRoute", "v1"), ("TLSRoute", "v1")} <= served
    assert {("BackendTLSPolicy", "v1"), ("ReferenceGrant", "v1beta1"), ("ReferenceGrant", "v1")} <= served
    assert ("GRPCRoute", "v1beta1") not in served
    bare = ObjectStore(gateway_api=False)
    assert bare.list("customresourcedefinitions")[0] == []
    assert not [t for t in bare.registry.all() if t.group == "gateway.networking.k8s.io"]


async def test_kubectl_get_crd_shows_them_established(kubectl: Kubectl) -> None:
    crds = await kubectl.json("get", "crd")
    for crd in crds["items"]:
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", crd["metadata"]["name"]
    assert {crd["spec"]["names"]["kind"] for crd in crds["items"]} == GATEWAY_KINDS
    listed = await kubectl("get", "gatewayclasses,gateways,httproutes,grpcroutes", "-A", check=True)
    assert "error" not in listed.stderr.lower()


async def test_the_upstream_install_applies_over_them_client_and_server_side(
    sandbox_api: SandboxApiServer, kubectl: Kubectl
) -> None:
    upstream = build.crd_dir(gateway_api.CHANNEL)
    applied = await kubectl("apply", "-f", str(upstream), timeout=60, check=True)
    lines = applied.stdout.splitlines()
    # The CRDs exist (configured: kubectl adds its last-applied annotation); the channel's admission
    # policy and binding are stored.
    assert sum(line.endswith(" configured") for line in lines) == len(GATEWAY_KINDS), applied.stdout
    assert sum(line.endswith(" created") for line in lines) == 2, applied.stdout
    again = await kubectl("apply", "-f", str(upstream), timeout=60, check=True)
    assert all(line.endswith(" unchanged") for line in again.stdout.splitlines()), again.stdout
    server_side = await kubectl("apply", "--server-side", "-f", str(upstream), timeout=60, check=True)
    assert all(line.endswith(" serverside-applied") for line in server_side.stdout.splitlines())

    # Still served, with the same schema: a route gets the CRD's defaults.
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    }
    await kubectl("apply", "-f", "-", input=yaml.safe_dump(route), check=True)
    stored = sandbox_api.store.get("httproutes.gateway.networking.k8s.io", "web", "default")
    assert stored["spec"]["rules"][0]["backendRefs"][0] == {
        "name": "web", "port": 80, "weight": 1, "group": "", "kind": "Service"
    }  # fmt: skip
    assert stored["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
