"""A sandbox API server and a canaryd KubeClient pointed at it, for the adapter tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from canaryd.adapters.kube import KubeClient
from canaryd.sandbox.server.apiserver import SandboxApiServer

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "team"


def install_crds(server: SandboxApiServer) -> None:
    for path in sorted((REPO / "manifests" / "crd").glob("*.canaryd.io.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                server.store.create("customresourcedefinitions", doc)


def route(name: str = "web", *, kind: str = "HTTPRoute", target: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{target}-primary", "port": 80, "weight": 100},
                        {"name": f"{target}-canary", "port": 80, "weight": 0},
                    ]
                }
            ],
        },
    }


def deployment(name: str, image: str = "app:1", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def connect(kubeconfig: Path, **options: Any) -> KubeClient:
    return await KubeClient.connect(str(kubeconfig), **options)
