"""Kubeconfig files pointing kubectl and kubernetes_asyncio at a sandbox API server.

The sandbox listens on plain HTTP on the loopback address, so the file has no
certificates: `server: http://127.0.0.1:PORT`, an optional bearer token (the
sandbox's way to test "who may do what") and a default namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONTEXT = "canaryd-sandbox"


def kubeconfig_dict(
    server_url: str,
    *,
    token: str | None = None,
    namespace: str | None = None,
    context: str = DEFAULT_CONTEXT,
    user: str = "sandbox-admin",
) -> dict[str, Any]:
    user_entry: dict[str, Any] = {"token": token} if token else {}
    context_entry: dict[str, Any] = {"cluster": context, "user": user}
    if namespace:
        context_entry["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context, "context": context_entry}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(
    path: str | Path,
    server_url: str,
    *,
    token: str | None = None,
    namespace: str | None = None,
    context: str = DEFAULT_CONTEXT,
) -> Path:
    """Write a kubeconfig for `server_url` to `path` (mode 0600) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        yaml.safe_dump(
            kubeconfig_dict(server_url, token=token, namespace=namespace, context=context), sort_keys=False
        )
    )
    target.chmod(0o600)
    return target
