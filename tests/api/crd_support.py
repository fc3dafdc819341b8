"""The CRDs, the samples and the two verdicts (API server and models) the conformance tests compare.

The API server's verdict is what kube-apiserver does with a custom resource:
prune and default it from the CRD schema, then validate it (OpenAPI and CEL),
here through ``canaryd.sandbox.server.openapi``, and on the real kube-apiserver
of the cluster harness through ``RealApiServer`` (server-side dry run). The
models' verdict is whether ``canaryd.api.models`` parse the object as the API
server stores it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from canaryd.api.models import Canary, MetricTemplate
from canaryd.sandbox.server import openapi

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "manifests" / "crd"
SAMPLES_DIR = ROOT / "manifests" / "samples"
ANALYSIS_DIR = ROOT / "analysis"

MODELS: dict[str, type[BaseModel]] = {"Canary": Canary, "MetricTemplate": MetricTemplate}
CRD_FILES = {"Canary": "canaries.canaryd.io.yaml", "MetricTemplate": "metrictemplates.canaryd.io.yaml"}


@cache
def crd(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())
    return loaded


@cache
def schema(kind: str) -> dict[str, Any]:
    return openapi.crd_version_schema(crd(kind), "v1alpha1")


def samples(kind: str, directory: Path = SAMPLES_DIR) -> list[dict[str, Any]]:
    """Every object of ``kind`` in manifests/samples (or another directory of manifests)."""
    found = []
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == kind:
                found.append(document)
    return found


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server would store it (pruned and defaulted)."""
    result: dict[str, Any] = openapi.apply_defaults(schema(obj["kind"]), obj)
    return result


def server_errors(obj: dict[str, Any]) -> list[openapi.FieldError]:
    """Why the API server would refuse ``obj`` (empty: it accepts it)."""
    return openapi.validate(schema(obj["kind"]), stored(obj), status_subresource=True)


def model_error(obj: dict[str, Any]) -> ValidationError | None:
    """Why the models refuse ``obj`` as the API server stores it (None: they accept it)."""
    try:
        MODELS[obj["kind"]].model_validate(stored(obj))
    except ValidationError as error:
        return error
    return None


def base_canary() -> dict[str, Any]:
    """The Canary from DESIGN.md's public contract, as a fresh mutable copy."""
    canary = next(c for c in samples("Canary") if c["metadata"]["name"] == "payments-api")
    return copy.deepcopy(canary)


def linear_canary() -> dict[str, Any]:
    """The sample Canary with a stepWeight + maxWeight schedule."""
    canary = next(c for c in samples("Canary") if c["metadata"]["name"] == "payments-ledger")
    return copy.deepcopy(canary)


def base_template() -> dict[str, Any]:
    """The sample MetricTemplate that sets a provider address."""
    template = next(t for t in samples("MetricTemplate") if "provider" in t["spec"])
    return copy.deepcopy(template)


def valid_status() -> dict[str, Any]:
    """A status as the controller and ``kubectl canary`` write it mid-run."""
    return {
        "phase": "Progressing",
        "canaryWeight": 10,
        "step": 1,
        "failedChecks": 1,
        "analysisErrors": 0,
        "revision": "7d9c5b6f4",
        "lastPromotedRevision": "5f6d8c7b9",
        "lastStepTime": "2026-05-01T10:02:00Z",
        "runStartedAt": "2026-05-01T10:00:00Z",
        "lastProgressTime": "2026-05-01T10:02:00.250000+00:00",
        "paused": False,
        "requestedAction": {
            "id": "a1b2c3",
            "action": "pause",
            "requestedAt": "2026-05-01T10:02:30Z",
            "requestedBy": "alice@example.com",
        },
        "lastAction": {"id": "z9y8", "action": "resume", "result": "Resumed", "at": "2026-05-01T09:00:00Z"},
        "routeGenerations": [
            {
                "kind": "HTTPRoute",
                "name": "payments-api",
                "uid": "4f1c",
                "first": 3,
                "last": 5,
                "specHash": "9a8b",
            }
        ],
        "metrics": [
            {"name": "success-rate", "verdict": "Pass", "value": 99.7, "checkedAt": "2026-05-01T10:02:00Z"},
            {"name": "latency-p99", "verdict": "NoData", "value": None, "message": "no series"},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Initialized",
                "message": "",
                "lastTransitionTime": "2026-05-01T09:00:00Z",
                "observedGeneration": 3,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "StepAdvanced",
                "message": "weight 10",
                "lastTransitionTime": "2026-05-01T10:00:00Z",
                "observedGeneration": 3,
            },
        ],
        "observedGeneration": 3,
    }


class RealApiServer:
    """The canaryd CRDs on a real kube-apiserver, judging objects by server-side dry run.

    ``verdict(obj)`` creates ``obj`` with ``dryRun=All`` (nothing is stored) in a namespace of its
    own and, when ``obj`` has a status, writes that status the same way onto a stored object of the
    same kind (a create ignores status: it is a subresource). One keep-alive HTTPS connection.
    """

    def __init__(self, cluster: Any, namespace: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        self.cluster = cluster
        self.namespace = namespace
        address = urlsplit(cluster.server)
        self._connection = http.client.HTTPSConnection(
            address.hostname or "127.0.0.1", address.port, context=cluster.ssl_context(), timeout=30
        )
        self._status_bases: dict[str, dict[str, Any]] = {}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import json

        headers = {"Authorization": f"Bearer {self.cluster.admin_token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._connection.request(method, path, body=data, headers=headers)
            response = self._connection.getresponse()
        except (ConnectionError, OSError):  # the server closed the kept-alive connection: once more
            self._connection.close()
            self._connection.request(method, path, body=data, headers=headers)
            response = self._connection.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def close(self) -> None:
        self._connection.close()

    def _collection(self, kind: str) -> str:
        plural = {"Canary": "canaries", "MetricTemplate": "metrictemplates"}[kind]
        return f"/apis/canaryd.io/v1alpha1/namespaces/{self.namespace}/{plural}"

    def _status_base(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = obj["kind"]
        if kind not in self._status_bases:
            base = {**copy.deepcopy(obj), "metadata": {"name": "status-base", "namespace": self.namespace}}
            base.pop("status", None)
            code, created = self.request("POST", self._collection(kind), base)
            assert code == 201, created
            self._status_bases[kind] = created
        return self._status_bases[kind]

    def verdict(self, obj: dict[str, Any]) -> RealVerdict:
        """Whether the server refuses ``obj``: its causes (field, message), and what it would store."""
        body = copy.deepcopy(obj)
        body["metadata"] = {**body.get("metadata", {}), "namespace": self.namespace}
        status = body.pop("status", None)
        code, answer = self.request("POST", f"{self._collection(obj['kind'])}?dryRun=All", body)
        if code == 201 and status is not None:
            base = copy.deepcopy(self._status_base(obj))
            base["status"] = status
            name = base["metadata"]["name"]
            code, answer = self.request(
                "PUT", f"{self._collection(obj['kind'])}/{name}/status?dryRun=All", base
            )
            if code == 200:
                code, answer = 201, {**answer, "spec": None}
        if code == 201:
            return RealVerdict(False, [], answer)
        assert code == 422, f"HTTP {code}: {answer}"
        causes = [(c.get("field", ""), c.get("message", "")) for c in answer["details"].get("causes") or []]
        return RealVerdict(True, sorted(causes), None)


@dataclass(frozen=True)
class RealVerdict:
    refused: bool
    causes: list[tuple[str, str]]
    #: what a create would store (spec None when the object was judged through its status)
    stored: dict[str, Any] | None


def sandbox_causes(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """The sandbox's causes for ``obj`` as (field, message), as a Status body carries them."""
    return sorted((e.as_cause()["field"] or "<nil>", e.as_cause()["message"]) for e in server_errors(obj))
