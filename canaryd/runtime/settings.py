"""The controller's configuration: environment variables (``CANARYD_*``) and their flag twins.

A setting comes from, in order: a ``canaryd run`` flag, the ``CANARYD_<NAME>``
environment variable, the default here. The install manifests set
environment variables; people on a laptop pass flags.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    """Environment names for a setting: its own and older spellings, each with the CANARYD_ prefix."""
    return AliasChoices(*(f"CANARYD_{n.upper()}" for n in names))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CANARYD_", populate_by_name=True, extra="ignore")

    #: A kubeconfig file; when absent, $KUBECONFIG, else the in-cluster service account.
    kubeconfig: str | None = None
    #: The kubeconfig context to use (its current context when absent).
    context: str | None = None
    #: Prometheus to ask when a MetricTemplate names no address.
    prometheus_url: str = "http://localhost:9090"
    #: Namespaces to watch, comma-separated in the environment; all namespaces when empty.
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    leader_elect: bool = False
    leader_election_id: str = Field(
        default="canaryd-leader", validation_alias=_env("leader_election_id", "lease_name")
    )
    leader_election_namespace: str = Field(
        default="canaryd-system", validation_alias=_env("leader_election_namespace", "lease_namespace")
    )
    #: This replica's name on the Lease; the pod name in a cluster (host name and PID by default).
    leader_election_identity: str = ""
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    #: Split the Canaries into this many shards, each held by one replica through its own Lease
    #: (named after ``leader_election_id``); 0 means no sharding (one leader, with ``leader_elect``).
    shards: int = Field(default=0, ge=0, le=256)
    health_address: str = Field(default=":8081", validation_alias=_env("health_address", "health_addr"))
    metrics_address: str = Field(default=":8080", validation_alias=_env("metrics_address", "metrics_addr"))
    log_format: Literal["json", "console"] = "json"
    log_level: str = "info"
    #: Runs (Canaries in Progressing, Promoting or Finalizing) allowed at once; 0 means no limit.
    max_concurrent_runs: int = Field(default=0, ge=0)
    #: Client-side rate limit on Kubernetes API calls.
    qps: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)
    #: Restart a watch on which nothing (not even a bookmark) arrived for this long.
    watch_stall_timeout_seconds: float = Field(default=90.0, gt=0)
    #: How long a single Prometheus query may take.
    prometheus_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Queries in flight per Prometheus server.
    prometheus_max_in_flight: int = Field(default=8, ge=1)
    #: The Secret with the cluster's chat notification URLs: ``namespace/name``, or ``name`` in the
    #: leader-election namespace; none when empty (Canaries may still name their own).
    notification_secret: str = ""
    #: A name for this cluster in chat notifications (for channels several clusters share).
    cluster_name: str = ""
    #: Threshold queries ask about the decision time rounded down to this many seconds, so that
    #: Canaries due together send identical queries; 0 asks about the exact decision time.
    prometheus_align_seconds: float = Field(default=1.0, ge=0, le=60)
    #: How long an answer is reused for identical queries (same endpoint, PromQL and time).
    prometheus_share_seconds: float = Field(default=30.0, ge=0)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _identity(self) -> Settings:
        if not self.leader_election_identity:
            self.leader_election_identity = f"{socket.gethostname()}-{os.getpid()}"
        if not self.lease_duration_seconds > self.renew_deadline_seconds > self.retry_period_seconds:
            raise ValueError("leader election needs lease duration > renew deadline > retry period")
        return self


def parse_address(address: str) -> tuple[str, int]:
    """':8080' → ('0.0.0.0', 8080); '127.0.0.1:0' → ('127.0.0.1', 0); '0' disables the endpoint (port -1)."""
    if address in ("", "0"):
        return ("", -1)
    host, _, port = address.rpartition(":")
    return (host or "0.0.0.0", int(port))
