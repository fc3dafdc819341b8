"""Only Services in allowed namespaces, resolved to addresses a Service can have, are ever load targets."""

from __future__ import annotations

import pytest

from canaryd.loadtest.targets import (
    TargetRefused,
    address_problem,
    check_allowed,
    parse_target,
    resolve_target,
    static_resolver,
)


@pytest.mark.parametrize(
    ("url", "label", "path"),
    [
        ("http://payments-api-canary.payments:8080/healthz", "payments-api-canary.payments:8080", "/healthz"),
        ("http://payments-api-canary.payments.svc/", "payments-api-canary.payments:80", "/"),
        ("https://api-canary.shop.svc.cluster.local:8443/x?y=1", "api-canary.shop:8443", "/x?y=1"),
        ("HTTP://API-Canary.Shop", "api-canary.shop:80", "/"),
        ("http://api-canary.shop.svc.cluster.local.:81", "api-canary.shop:81", "/"),
        ("grpc://grpc-canary.shop:9000", "grpc-canary.shop:9000", ""),
        ("grpcs://grpc-canary.shop/pkg.Svc/Call", "grpc-canary.shop:443", "/pkg.Svc/Call"),
    ],
)
def test_service_names_in_every_form_are_targets(url: str, label: str, path: str) -> None:
    target = parse_target(url)
    assert target.label == label and target.path == path
    assert target.fqdn == f"{target.service}.{target.namespace}.svc.cluster.local"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.12:8080/", "IPLiteral"),
        ("http://127.0.0.1/", "IPLiteral"),
        ("http://[::1]:8080/", "IPLiteral"),
        ("http://169.254.169.254/latest/meta-data/", "IPLiteral"),
        ("http://api.example.com/", "NotAServiceName"),
        ("http://api-canary.shop.svc.cluster.local.evil.example/", "NotAServiceName"),
        ("http://api-canary.shop.svc.other.domain/", "NotAServiceName"),
        ("http://localhost:8080/", "NotAServiceName"),
        ("http://api-canary/", "NotAServiceName"),
        ("http://0x7f.shop/", "NotAServiceName"),
        ("http://api_canary.shop/", "NotAServiceName"),
        ("file:///etc/passwd", "UnsupportedScheme"),
        ("ftp://api.shop/", "UnsupportedScheme"),
        ("api-canary.shop:8080", "UnsupportedScheme"),
        ("http://user:pw@api-canary.shop/", "CredentialsInURL"),
        ("http://api-canary.shop:99999/", "InvalidURL"),
    ],
)
def test_anything_else_is_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        parse_target(url)
    assert refused.value.reason == reason
    assert refused.value.message


def test_an_external_looking_name_is_read_as_a_service_and_never_resolved_outside() -> None:
    target = parse_target("http://example.com/")
    assert (target.service, target.namespace) == ("example", "com")
    assert target.fqdn == "example.com.svc.cluster.local"
    with pytest.raises(TargetRefused) as refused:
        check_allowed(target, allowed_namespaces={"shop"}, canary_namespace="shop")
    assert refused.value.reason == "NamespaceNotAllowed"


def test_another_cluster_domain_is_honoured() -> None:
    assert (
        parse_target("http://a.b.svc.corp.internal", cluster_domain="corp.internal").fqdn
        == "a.b.svc.corp.internal"
    )
    with pytest.raises(TargetRefused):
        parse_target("http://a.b.svc.cluster.local", cluster_domain="corp.internal")


def test_the_namespace_must_be_allowed_and_by_default_the_canarys_own() -> None:
    target = parse_target("http://api-canary.shop:8080/")
    check_allowed(target, allowed_namespaces={"shop", "pay"}, canary_namespace="shop")
    with pytest.raises(TargetRefused) as refused:
        check_allowed(target, allowed_namespaces={"pay"}, canary_namespace="shop")
    assert refused.value.reason == "NamespaceNotAllowed" and "pay" in refused.value.message
    with pytest.raises(TargetRefused) as refused:
        check_allowed(target, allowed_namespaces={"shop", "pay"}, canary_namespace="pay")
    assert refused.value.reason == "CrossNamespace"
    check_allowed(target, allowed_namespaces={"shop", "pay"}, canary_namespace="pay", cross_namespace=True)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.96.0.12", True),
        ("172.20.4.1", True),
        ("192.168.1.9", True),
        ("100.64.3.2", True),
        ("fd00:10:96::12", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("93.184.216.34", False),
        ("2606:4700::6810:85e5", False),
        ("::ffff:169.254.169.254", False),
    ],
)
def test_only_addresses_a_service_can_have_are_allowed(address: str, allowed: bool) -> None:
    assert (address_problem(address) is None) is allowed


async def test_resolution_pins_the_addresses_and_refuses_bad_ones() -> None:
    target = parse_target("http://api-canary.shop:8080/")
    fqdn = "api-canary.shop.svc.cluster.local"
    assert await resolve_target(target, static_resolver({fqdn: "10.96.1.2"})) == ["10.96.1.2"]
    with pytest.raises(TargetRefused) as refused:
        await resolve_target(target, static_resolver({fqdn: "8.8.8.8"}))
    assert refused.value.reason == "AddressNotAllowed" and "ExternalName" in refused.value.message
    with pytest.raises(TargetRefused) as refused:
        await resolve_target(target, static_resolver({}))
    assert refused.value.reason == "DoesNotResolve" and "'api-canary'" in refused.value.message
    with pytest.raises(TargetRefused):
        await resolve_target(target, static_resolver({fqdn: "127.0.0.1"}))
    assert await resolve_target(target, static_resolver({fqdn: "127.0.0.1"}), loopback_allowed=True) == [
        "127.0.0.1"
    ]
