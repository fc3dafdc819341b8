"""The ReplicaSets and Pods behind a simulated Deployment, as the real controllers and kubelets leave them.

On a cluster a Deployment owns one ReplicaSet per pod template, each owns its
Pods, and the kubelet reports each Pod Running with an IP and a Ready
condition; the EndpointSlice controller turns the Ready pods a Service
selects into addresses, which is what a Gateway implementation such as
Traefik sends requests to. The sandbox's Deployment simulator decides how
many pods of which template exist and how many are ready
(``canaryd.sandbox.sim.deployments``); this module says what objects that
means, as pure functions of the Deployment and those counts:

- ``replica_set``: ``<deployment>-<template hash>``, owned by the Deployment,
  with the template labelled ``pod-template-hash`` and its status counts;
- ``pod``: ``<replica set>-<5 characters>``, owned by the ReplicaSet, named
  by its index so the same plan names the same pods; its status is Running,
  with an IP and Ready (or not) as the plan says;
- ``PodAddresses``: pod IPs, one per pod for as long as it exists, from a
  CIDR. The sandbox allows any range, loopback included (a real API server
  refuses loopback endpoints), so a test can serve each pod from a real
  process on 127.x.y.z.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canaryd.api.timestamps import format_rfc3339

Obj = Mapping[str, Any]

DEFAULT_POD_CIDR = "10.244.0.0/16"
#: The Node every simulated pod runs on (the sandbox serves no Nodes).
NODE_NAME = "sandbox-node"
HOST_IP = "127.0.0.1"
#: The most Pod objects one simulated ReplicaSet gets, whatever its replicas say.
MAX_PODS_PER_REPLICA_SET = 250
TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class ReplicaSetPlan:
    """How many pods of one template exist, and how many of them are ready."""

    template_hash: str
    replicas: int
    ready: int


def suffix(seed: str, length: int = 5) -> str:
    """A name-safe suffix derived from ``seed`` (kube's alphabet: no vowels, no look-alikes)."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(_SAFE_ALPHABET))
        chars.append(_SAFE_ALPHABET[index])
    return "".join(chars)


def replica_set_name(deployment: Obj, template_hash: str) -> str:
    return f"{(deployment.get('metadata') or {}).get('name', '')}-{template_hash}"


def pod_names(replica_set_name: str, replicas: int) -> list[str]:
    """The names of a ReplicaSet's pods 0..replicas-1, at most ``MAX_PODS_PER_REPLICA_SET`` of them.

    The same index always gives the same name.
    """
    count = min(replicas, MAX_PODS_PER_REPLICA_SET)
    return [f"{replica_set_name}-{suffix(f'{replica_set_name}/{index}')}" for index in range(count)]


def owner_reference(owner: Obj) -> dict[str, Any]:
    metadata = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": metadata.get("name", ""),
        "uid": metadata.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labelled_template(template: Obj, template_hash: str) -> dict[str, Any]:
    metadata = dict(template.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), TEMPLATE_HASH_LABEL: template_hash}
    return {**template, "metadata": metadata}


def replica_set(
    deployment: Obj, template: Obj, template_hash: str, replicas: int, revision: int
) -> dict[str, Any]:
    """The ReplicaSet (metadata and spec) of ``template`` for ``deployment``."""
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    labelled = _labelled_template(template, template_hash)
    match_labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
    selector = {
        **(spec.get("selector") or {}),
        "matchLabels": {**match_labels, TEMPLATE_HASH_LABEL: template_hash},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": replica_set_name(deployment, template_hash),
            "namespace": metadata.get("namespace", ""),
            "labels": dict(labelled["metadata"]["labels"]),
            "annotations": {
                REVISION_ANNOTATION: str(revision),
                "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
            },
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": labelled},
    }


def replica_set_status(replica_set_obj: Obj, plan: ReplicaSetPlan) -> dict[str, Any]:
    """Status counts as the ReplicaSet controller reports them (zero counts omitted, like the server)."""
    counts = {
        "replicas": plan.replicas,
        "fullyLabeledReplicas": plan.replicas,
        "readyReplicas": plan.ready,
        "availableReplicas": plan.ready,
    }
    status: dict[str, Any] = {key: value for key, value in counts.items() if value}
    status["replicas"] = plan.replicas
    status["observedGeneration"] = (replica_set_obj.get("metadata") or {}).get("generation", 1)
    return status


def pod(replica_set_obj: Obj, name: str) -> dict[str, Any]:
    """A pod of a ReplicaSet (metadata and spec), on the sandbox's one Node."""
    metadata = replica_set_obj.get("metadata") or {}
    template = (replica_set_obj.get("spec") or {}).get("template") or {}
    template_metadata = template.get("metadata") or {}
    pod_metadata: dict[str, Any] = {
        "name": name,
        "generateName": f"{metadata.get('name', '')}-",
        "namespace": metadata.get("namespace", ""),
        "labels": dict(template_metadata.get("labels") or {}),
        "ownerReferences": [owner_reference(replica_set_obj)],
    }
    if template_metadata.get("annotations"):
        pod_metadata["annotations"] = dict(template_metadata["annotations"])
    spec = dict(template.get("spec") or {})
    spec["nodeName"] = NODE_NAME
    spec.setdefault("serviceAccountName", "default")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_metadata, "spec": spec}


def pod_status(pod_obj: Obj, ip: str, ready: bool, now: datetime) -> dict[str, Any]:
    """Running on the Node with ``ip``; Ready as given (transition times kept from the previous status)."""
    previous = {c.get("type"): c for c in (pod_obj.get("status") or {}).get("conditions") or []}
    stamp = format_rfc3339(now.replace(microsecond=0))
    created = (pod_obj.get("metadata") or {}).get("creationTimestamp") or stamp

    def condition(type_: str, status: bool) -> dict[str, Any]:
        text = "True" if status else "False"
        old = previous.get(type_)
        since = old.get("lastTransitionTime") if old and old.get("status") == text else stamp
        return {"type": type_, "status": text, "lastProbeTime": None, "lastTransitionTime": since}

    containers = (pod_obj.get("spec") or {}).get("containers") or []
    return {
        "phase": "Running",
        "conditions": [
            condition("PodScheduled", True),
            condition("Initialized", True),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": created,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {
                "name": container.get("name", ""),
                "image": container.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": created}},
            }
            for container in containers
        ],
    }


def pod_ready(pod_obj: Obj) -> bool:
    """Whether the pod's Ready condition is True."""
    conditions = (pod_obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_ip(pod_obj: Obj) -> str | None:
    ip = (pod_obj.get("status") or {}).get("podIP")
    return str(ip) if ip else None


class PodAddresses:
    """Pod IPs from a CIDR: each pod keeps its address while it exists; freed addresses are reused last."""

    def __init__(self, cidr: str = DEFAULT_POD_CIDR) -> None:
        self.network = ipaddress.ip_network(cidr)
        self._hosts = self.network.hosts()
        self._by_pod: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()
        self._freed: list[str] = []

    def of(self, key: tuple[str, str]) -> str | None:
        return self._by_pod.get(key)

    def claim(self, key: tuple[str, str], ip: str) -> None:
        """Record an address a pod already has (pods that existed before the simulator started)."""
        if ipaddress.ip_address(ip) in self.network and ip not in self._taken:
            self._by_pod[key] = ip
            self._taken.add(ip)

    def assign(self, key: tuple[str, str]) -> str:
        known = self._by_pod.get(key)
        if known is not None:
            return known
        ip = None
        for candidate in self._hosts:
            if str(candidate) not in self._taken:
                ip = str(candidate)
                break
        if ip is None:
            while self._freed:
                candidate_ip = self._freed.pop(0)
                if candidate_ip not in self._taken:
                    ip = candidate_ip
                    break
        if ip is None:
            raise RuntimeError(f"pod CIDR {self.network} has no free address left")
        self._by_pod[key] = ip
        self._taken.add(ip)
        return ip

    def release(self, key: tuple[str, str]) -> None:
        ip = self._by_pod.pop(key, None)
        if ip is not None:
            self._taken.discard(ip)
            self._freed.append(ip)

    def known(self) -> Iterable[tuple[str, str]]:
        return list(self._by_pod)
