"""Which targets the load tester may send to, and the one address each is pinned to.

A load tester that sends wherever a webhook says is an open relay for
denial-of-service from inside the cluster. So a target is accepted only when:

1. its URL is ``http``, ``https``, ``grpc`` (plaintext HTTP/2) or ``grpcs``,
   with no user name or password;
2. its host is a Kubernetes Service name, ``<service>.<namespace>``,
   ``<service>.<namespace>.svc`` or ``<service>.<namespace>.svc.<cluster
   domain>``: never an IP literal, a single label (which the pod's DNS search
   path would complete), or any other name;
3. its namespace is on the allow-list, and (unless cross-namespace load is
   allowed) is the namespace of the Canary whose webhook asked;
4. the Service's absolute name (with a trailing dot, so no search path
   applies) resolves, and every address it resolves to is one a Service can
   have: not loopback, link-local (cloud metadata lives there), multicast,
   unspecified or public. That refuses ExternalName Services that point out
   of the cluster.

Connections then go to the addresses resolved here and nowhere else (see
``PinnedResolver`` in the engine), and redirects are never followed. Tests
map Service names to loopback addresses with an explicit test setting;
nothing else reaches loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443}
GRPC_SCHEMES: Final = frozenset({"grpc", "grpcs"})
#: A Service name is a DNS-1035 label (it starts with a letter); a namespace a DNS-1123 label.
SERVICE_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NAMESPACE_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RESOLVE_TIMEOUT_SECONDS: Final = 5.0

#: (host, port) -> addresses; the production one asks the system resolver.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class TargetRefused(Exception):
    """A target the load tester will not send to; ``reason`` is a CamelCase word for machines."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Target:
    scheme: str
    service: str
    namespace: str
    port: int
    #: For HTTP: path and query string. For gRPC: the method named in the URL path, or "".
    path: str
    #: The host as written in the URL (sent as Host / :authority).
    host: str
    #: ``<service>.<namespace>.svc.<cluster domain>``, the name that is resolved.
    fqdn: str

    @property
    def protocol(self) -> str:
        return "grpc" if self.scheme in GRPC_SCHEMES else "http"

    @property
    def label(self) -> str:
        """The target in metrics and answers: ``service.namespace:port``."""
        return f"{self.service}.{self.namespace}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path if self.protocol == 'http' else ''}"


def parse_target(url: str, *, cluster_domain: str = "cluster.local") -> Target:
    """The Service ``url`` names, or TargetRefused saying why it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused("InvalidURL", f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TargetRefused(
            "UnsupportedScheme",
            f"{url!r}: the scheme must be http, https, grpc or grpcs, not {scheme or 'none'!r}",
        )
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(
            "CredentialsInURL", f"{url!r}: a target URL must not carry a user name or password"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("InvalidURL", f"{url!r} names no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise TargetRefused(
            "IPLiteral", f"{url!r}: targets are Services by name (<service>.<namespace>), never IP addresses"
        )
    labels = host.rstrip(".").split(".")
    domain = cluster_domain.strip(".").lower().split(".")
    allowed_tails: tuple[list[str], ...] = ([], ["svc"], ["svc", *domain])
    if len(labels) < 2 or labels[2:] not in allowed_tails:
        raise TargetRefused(
            "NotAServiceName",
            f"{host!r} is not a Service name: use <service>.<namespace>, <service>.<namespace>.svc or "
            f"<service>.<namespace>.svc.{'.'.join(domain)}",
        )
    service, namespace = labels[0], labels[1]
    if not SERVICE_LABEL.match(service) or not NAMESPACE_LABEL.match(namespace):
        raise TargetRefused(
            "NotAServiceName", f"{host!r}: {service!r}.{namespace!r} is not a Service and namespace"
        )
    if scheme in GRPC_SCHEMES:
        path = parts.path if parts.path not in ("", "/") else ""
    else:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        scheme=scheme,
        service=service,
        namespace=namespace,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        path=path,
        host=host.rstrip("."),
        fqdn=f"{service}.{namespace}.svc.{'.'.join(domain)}",
    )


def check_allowed(
    target: Target,
    *,
    allowed_namespaces: Collection[str],
    canary_namespace: str,
    cross_namespace: bool = False,
) -> None:
    """TargetRefused unless the target's namespace is allowed for a Canary in ``canary_namespace``."""
    if target.namespace not in allowed_namespaces:
        allowed = ", ".join(sorted(allowed_namespaces)) or "none"
        raise TargetRefused(
            "NamespaceNotAllowed",
            f"namespace {target.namespace!r} is not on this load tester's allow-list (allowed: {allowed})",
        )
    if not cross_namespace and target.namespace != canary_namespace:
        raise TargetRefused(
            "CrossNamespace",
            f"the Canary in {canary_namespace!r} may only load Services in its own namespace, not "
            f"{target.namespace!r} (cross-namespace load is off)",
        )


def address_problem(address: str) -> str | None:
    """Why a Service could not have ``address``, or None when it could."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_global:
        return "a public address (a Service's ClusterIP is private; is it an ExternalName Service?)"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of an absolute name from the system resolver (no search path: the name ends with a dot)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(f"{host}.", port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def static_resolver(hosts: Mapping[str, str]) -> Resolver:
    """A resolver that knows only ``hosts`` (Service FQDN -> address): the load tester's test setting."""

    async def resolve(host: str, port: int) -> list[str]:
        address = hosts.get(host)
        if address is None:
            raise OSError(f"{host} is not in the test host map")
        return [address]

    return resolve


async def resolve_target(target: Target, resolver: Resolver, *, loopback_allowed: bool = False) -> list[str]:
    """The addresses to pin ``target`` to, or TargetRefused when it does not resolve to Service addresses."""
    try:
        addresses = await resolver(target.fqdn, target.port)
    except (OSError, TimeoutError) as exc:
        raise TargetRefused(
            "DoesNotResolve",
            f"{target.fqdn} does not resolve: is there a Service {target.service!r} in "
            f"namespace {target.namespace!r}? ({exc or type(exc).__name__})",
        ) from None
    if not addresses:
        raise TargetRefused("DoesNotResolve", f"{target.fqdn} resolves to no address")
    for address in addresses:
        problem = address_problem(address)
        if problem == "a loopback address" and loopback_allowed:
            continue
        if problem is not None:
            raise TargetRefused("AddressNotAllowed", f"{target.fqdn} resolves to {address}, {problem}")
    return addresses
