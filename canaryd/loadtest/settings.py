"""The load tester's configuration: ``CANARYD_LOADTEST_*`` environment variables and their flag twins.

The namespace allow-list is the one setting with no useful default: a load
tester that allows nothing refuses every call (and says so at start), which
is the safe way to be misconfigured.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from canaryd.loadtest.spec import Limits
from canaryd.loadtest.targets import TargetRefused, parse_target


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class LoadTestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CANARYD_LOADTEST_", populate_by_name=True, extra="ignore")

    #: host:port for the webhook endpoint, /healthz and /metrics.
    address: str = ":8080"
    #: Namespaces whose Services may be loaded (comma-separated in the environment).
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Let a Canary load Services of other allowed namespaces than its own.
    allow_cross_namespace: bool = False
    cluster_domain: str = "cluster.local"
    max_rps: float = Field(default=200.0, gt=0)
    max_concurrency: int = Field(default=32, ge=1)
    max_duration_seconds: float = Field(default=1800.0, gt=0)
    max_jobs: int = Field(default=32, ge=1)
    default_rps: float = Field(default=10.0, gt=0)
    default_concurrency: int = Field(default=4, ge=1)
    default_duration_seconds: float = Field(default=60.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    #: A file holding the HMAC key webhook calls must be signed with; unsigned calls are refused when set.
    webhook_secret_file: str | None = None
    #: How far a signed call's timestamp may be from the load tester's clock.
    signature_tolerance_seconds: float = Field(default=300.0, gt=0)
    log_format: Literal["json", "console"] = "json"
    log_level: str = "info"
    #: Tests only: Service names resolved to loopback addresses instead of asking DNS ("name=127.0.0.1").
    test_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("namespaces", "test_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @model_validator(mode="after")
    def _consistent(self) -> LoadTestSettings:
        if self.default_rps > self.max_rps or self.default_concurrency > self.max_concurrency:
            raise ValueError("the default rate and concurrency must be within the maxima")
        if self.default_duration_seconds > self.max_duration_seconds:
            raise ValueError("the default duration must be within the maximum")
        self.test_host_map()
        return self

    def limits(self) -> Limits:
        return Limits(
            max_rps=self.max_rps,
            max_concurrency=self.max_concurrency,
            max_duration=self.max_duration_seconds,
            default_rps=self.default_rps,
            default_concurrency=self.default_concurrency,
            default_duration=self.default_duration_seconds,
            request_timeout=self.request_timeout_seconds,
            cluster_domain=self.cluster_domain,
        )

    def test_host_map(self) -> dict[str, str]:
        """Service FQDN -> loopback address; anything but a Service name and a loopback address is refused."""
        hosts: dict[str, str] = {}
        for entry in self.test_hosts:
            name, eq, address = entry.partition("=")
            if not eq:
                raise ValueError(f"test host {entry!r} is not NAME=ADDRESS")
            try:
                target = parse_target(f"http://{name.strip()}", cluster_domain=self.cluster_domain)
                ip = ipaddress.ip_address(address.strip())
            except (TargetRefused, ValueError) as exc:
                raise ValueError(f"test host {entry!r}: {exc}") from None
            if not ip.is_loopback:
                raise ValueError(f"test host {entry!r}: test hosts may only map to loopback addresses")
            hosts[target.fqdn] = str(ip)
        return hosts


def parse_address(address: str) -> tuple[str, int]:
    """':8080' -> ('0.0.0.0', 8080); '127.0.0.1:0' -> ('127.0.0.1', 0)."""
    host, _, port = address.rpartition(":")
    return (host or "0.0.0.0", int(port))
