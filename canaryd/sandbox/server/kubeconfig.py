"""Kubeconfig files pointing kubectl and kubernetes_asyncio at a sandbox API server.

By default the sandbox listens on plain HTTP on the loopback address, so the
file has no certificates: `server: http://127.0.0.1:PORT`. kubectl (client-go)
does not send a bearer token over plain HTTP, so a kubeconfig that must act as
a limited user either points at the TLS listener (`SandboxApiServer(tls=True)`,
the CA goes in `certificate-authority-data`) or impersonates the user (`as:`),
which the sandbox honours on both listeners.
"""

from __future__ import annotations

import base64
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
    ca_pem: bytes | None = None,
    impersonate: str | None = None,
) -> dict[str, Any]:
    user_entry: dict[str, Any] = {"token": token} if token else {}
    if impersonate:
        user_entry["as"] = impersonate
    cluster: dict[str, Any] = {"server": server_url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    context_entry: dict[str, Any] = {"cluster": context, "user": user}
    if namespace:
        context_entry["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
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
    ca_pem: bytes | None = None,
    impersonate: str | None = None,
) -> Path:
    """Write a kubeconfig for `server_url` to `path` (mode 0600) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = kubeconfig_dict(
        server_url, token=token, namespace=namespace, context=context, ca_pem=ca_pem, impersonate=impersonate
    )
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    target.chmod(0o600)
    return target
