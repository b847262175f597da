"""Identity parsing, the access policy and audit redaction (the pieces the interceptor and
the end-to-end security tests build on)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from devstack.pki import IssuedCertificate, client_uri, ensure_dev_pki, issue_crafted_certificate
from devstack.stack import DEFAULT_POLICY
from netweave.headers import CLIENT_CERT_HEADER, IDENTITY_HEADERS, JWT_PAYLOAD_HEADER
from server.auth.audit import redact
from server.auth.identity import Channel, IdentityRefused, decode_jwt_payload, identify
from server.auth.policy import (
    ADMIN,
    DEPLOYER,
    MAINTAINER,
    READER,
    SUBSCRIBER,
    AccessPolicy,
    may_read_credentials,
    required_permission,
)
from server.config import GatewayConfig

URI = "spiffe://netweave.local/client/smo-north"
CA_DIR_NAME = "identity-ca"


def payload(claims: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def dev_ca(tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificate:
    return ensure_dev_pki(tmp_path_factory.mktemp(CA_DIR_NAME)).ca


def forwarded(
    ca: IssuedCertificate,
    tmp_path: Path,
    *,
    subject: x509.Name,
    uris: list[str],
) -> str:
    """The x-netweave-client-cert value Envoy sends for a certificate of `ca` with exactly
    this subject and these URI SANs (URL-encoded PEM, as Envoy's Lua API gives it)."""
    issued = issue_crafted_certificate(
        ca,
        IssuedCertificate(tmp_path / "c.crt", tmp_path / "c.key"),
        subject=subject,
        san=[x509.UniformResourceIdentifier(uri) for uri in uris] or [x509.DNSName("x")],
    )
    return urllib.parse.quote(issued.cert.read_text(), safe="")


def name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def test_certificate_identity_is_read_as_x509(dev_ca: IssuedCertificate, tmp_path: Path) -> None:
    header = forwarded(
        dev_ca,
        tmp_path,
        subject=name(
            (NameOID.ORGANIZATION_NAME, "netweave, dev"), (NameOID.COMMON_NAME, "smo-north")
        ),
        uris=[URI],
    )
    identity = identify({CLIENT_CERT_HEADER: header}, Channel.EDGE)
    assert identity.via == "certificate"
    assert (identity.certificate_uri, identity.certificate_cn) == (URI, "smo-north")
    assert identity.certificate_subject == "CN=smo-north,O=netweave\\, dev"
    assert identity.owner == f"cert-uri:{URI}"


def test_a_comma_in_a_uri_san_is_part_of_that_san(
    dev_ca: IssuedCertificate, tmp_path: Path
) -> None:
    injected = (
        f"spiffe://netweave.local/client/plain-reader2,URI={client_uri('netweave-dev-client')}"
    )
    header = forwarded(dev_ca, tmp_path, subject=name((NameOID.COMMON_NAME, "r")), uris=[injected])
    identity = identify({CLIENT_CERT_HEADER: header}, Channel.EDGE)
    assert identity.certificate_uri == injected
    policy = AccessPolicy.load(DEFAULT_POLICY)
    assert policy.roles_of(identity) == (READER,)


def test_an_escaped_comma_in_the_subject_is_no_second_cn(
    dev_ca: IssuedCertificate, tmp_path: Path
) -> None:
    # CN=evil, O="x,CN=trusted-admin": the O attribute holds the text, it is not a CN.
    subject = name((NameOID.COMMON_NAME, "evil"), (NameOID.ORGANIZATION_NAME, "x,CN=trusted-admin"))
    header = forwarded(dev_ca, tmp_path, subject=subject, uris=[])
    identity = identify({CLIENT_CERT_HEADER: header}, Channel.EDGE)
    assert identity.certificate_cn == "evil"
    assert identity.names() == ["cn:evil"]


@pytest.mark.parametrize(
    ("subject", "uris"),
    [
        (name((NameOID.COMMON_NAME, "a")), [URI, "spiffe://netweave.local/client/other"]),
        (name((NameOID.COMMON_NAME, "a"), (NameOID.COMMON_NAME, "b")), []),
    ],
    ids=["two-uri-sans", "two-cns"],
)
def test_an_ambiguous_certificate_is_refused(
    dev_ca: IssuedCertificate, tmp_path: Path, subject: x509.Name, uris: list[str]
) -> None:
    header = forwarded(dev_ca, tmp_path, subject=subject, uris=uris)
    with pytest.raises(IdentityRefused) as refused:
        identify({CLIENT_CERT_HEADER: header}, Channel.EDGE)
    assert refused.value.reason == "AMBIGUOUS_CLIENT_CERTIFICATE"


def test_unreadable_forwarded_identity_is_refused_not_ignored() -> None:
    with pytest.raises(IdentityRefused) as refused:
        identify({CLIENT_CERT_HEADER: "not-a-certificate"}, Channel.EDGE)
    assert refused.value.reason == "UNREADABLE_CLIENT_CERTIFICATE"
    for garbage in ("%%%", base64.urlsafe_b64encode(b"[1,2]").decode()):
        with pytest.raises(IdentityRefused):
            decode_jwt_payload(garbage)
    assert decode_jwt_payload(payload({"sub": "x"})) == {"sub": "x"}
    assert decode_jwt_payload("") == {}


@pytest.mark.parametrize("header", sorted(IDENTITY_HEADERS))
def test_identity_headers_on_the_internal_listener_are_refused(header: str) -> None:
    with pytest.raises(IdentityRefused) as refused:
        identify({header: payload({"sub": "x", "roles": [ADMIN]})}, Channel.INTERNAL)
    assert refused.value.reason == "IDENTITY_HEADERS_OUTSIDE_EDGE"
    internal = identify({"x-request-id": "1"}, Channel.INTERNAL, peer="ipv4:127.0.0.1:5")
    assert (internal.via, internal.owner) == ("internal", "internal")


def test_token_and_certificate_owners_never_collide(
    dev_ca: IssuedCertificate, tmp_path: Path
) -> None:
    # A certificate whose URI SAN spells a token subject owns nothing of that subject's.
    header = forwarded(dev_ca, tmp_path, subject=name((NameOID.COMMON_NAME, "c")), uris=["sub:smo"])
    by_certificate = identify({CLIENT_CERT_HEADER: header}, Channel.EDGE)
    by_token = identify({JWT_PAYLOAD_HEADER: payload({"sub": "smo"})}, Channel.EDGE)
    assert by_certificate.owner != by_token.owner
    anonymous = identify({}, Channel.EDGE)
    assert not anonymous.authenticated
    assert anonymous.owner == ""


@pytest.mark.parametrize(
    ("method", "permission"),
    [
        ("/o2ims.inventory.v2.InventoryService/ListResources", "inventory.read"),
        ("/o2ims.subscriptions.v1.SubscriptionService/GetSubscription", "subscriptions.read"),
        ("/o2ims.subscriptions.v1.SubscriptionService/DeleteSubscription", "subscriptions.write"),
        ("/o2ims.monitoring.v1.MonitoringService/CreateAlarmSubscription", "subscriptions.write"),
        ("/o2ims.monitoring.v1.MonitoringService/ListAlarms", "alarms.read"),
        ("/o2ims.monitoring.v1.MonitoringService/PatchAlarm", "alarms.write"),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "ops"),
        ("/grpc.health.v1.Health/Check", "public"),
        ("/some.new.Service/GetThing", "ops"),
    ],
)
def test_required_permission(method: str, permission: str) -> None:
    assert required_permission(method) == permission


def test_example_policy_roles(dev_ca: IssuedCertificate, tmp_path: Path) -> None:
    policy = AccessPolicy.load(DEFAULT_POLICY)

    def roles(headers: dict[str, str]) -> tuple[str, ...]:
        return policy.roles_of(identify(headers, Channel.EDGE))

    def cert(client: str) -> dict[str, str]:
        (tmp_path / client).mkdir(exist_ok=True)
        subject = name((NameOID.COMMON_NAME, client))
        uris = [client_uri(client)]
        return {
            CLIENT_CERT_HEADER: forwarded(dev_ca, tmp_path / client, subject=subject, uris=uris)
        }

    assert roles(cert("netweave-dev-client")) == (ADMIN,)
    assert roles(cert("smo-east")) == (READER, SUBSCRIBER)
    assert roles(cert("deployer-1")) == (READER, DEPLOYER)
    assert roles(cert("lab-probe")) == (READER,)
    # A token decides, whatever the certificate: its roles claim and its scopes.
    token = {JWT_PAYLOAD_HEADER: payload({"sub": "bot", "roles": [MAINTAINER, "root"]})}
    assert roles({**cert("netweave-dev-client"), **token}) == (MAINTAINER,)
    scoped = {JWT_PAYLOAD_HEADER: payload({"sub": "bot", "scope": "openid o2ims.read"})}
    assert roles(scoped) == (READER,)
    assert roles({}) == ()
    assert policy.roles_of(identify({}, Channel.INTERNAL)) == (ADMIN,)  # direct calls
    assert not policy.sees_all([READER, SUBSCRIBER])
    assert policy.sees_all([ADMIN])
    assert may_read_credentials([DEPLOYER])
    assert may_read_credentials([ADMIN])
    assert not may_read_credentials([READER, SUBSCRIBER, MAINTAINER])
    decision = policy.decide(
        "/o2ims.subscriptions.v1.SubscriptionService/CreateSubscription", [READER]
    )
    assert not decision.allowed
    assert decision.permission == "subscriptions.write"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("clients: [{match: x, roles: [superuser]}]", "unknown roles"),
        ("clients: [{match: '*', roles: [o2ims-admin]}]", "must name clients"),
        ("clients: [{roles: [o2ims-admin]}]", "needs a `match`"),
        ("admins: []", "unknown keys"),
        ("tokens: {scopes: {a: nobody}}", "unknown roles"),
        ("- just a list", "must be a mapping"),
    ],
)
def test_bad_policy_files_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        AccessPolicy.load(path)


def test_redaction() -> None:
    body = {
        "callback": "https://user:hunter2@smo.example/n",
        "nested": [{"clientSecret": "s", "accessToken": "t", "name": "ok"}],
    }
    assert redact(body) == {
        "callback": "https://[redacted]@smo.example/n",
        "nested": [{"clientSecret": "[redacted]", "accessToken": "[redacted]", "name": "ok"}],
    }


def test_rate_limits_per_role_and_client() -> None:
    policy = AccessPolicy.from_mapping(
        {
            "clients": [
                {"match": "spiffe://x/ops", "roles": ["o2ims-admin"]},
                {"match": "sub:bot", "roles": ["o2ims-reader", "o2ims-admin"]},
                {"match": "spiffe://x/smo-*", "roles": ["o2ims-admin"]},
                {"match": "spiffe://x/slow", "roles": ["o2ims-reader"]},
            ],
            "rate_limits": {"roles": {"o2ims-admin": 500}, "clients": {"spiffe://x/slow": 5}},
        }
    )
    # Wildcard rules name no client; a client's own rate beats its role's.
    assert policy.client_rates() == {"spiffe://x/ops": 500, "jwt:bot": 500, "spiffe://x/slow": 5}
    with pytest.raises(ValueError, match="whole number"):
        AccessPolicy.from_mapping({"rate_limits": {"clients": {"a": 0}}})
    with pytest.raises(ValueError, match="unknown roles"):
        AccessPolicy.from_mapping({"rate_limits": {"roles": {"root": 5}}})


# --- listener settings -------------------------------------------------------------------


def test_listener_settings_that_would_make_identity_ambiguous_refuse_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readable = tmp_path / "file.pem"
    readable.write_text("x")
    edge: dict[str, Any] = {
        "edge_listen": "127.0.0.1:0",
        "edge_tls_cert": str(readable),
        "edge_tls_key": str(readable),
        "edge_client_ca": str(readable),
        "edge_peer_uri": "spiffe://netweave.local/edge",
    }
    GatewayConfig(**edge)  # complete: starts
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"grpc_host": "0.0.0.0"}, "NETWEAVE_GRPC_HOST"),
        ({"grpc_host": "10.0.0.1"}, "NETWEAVE_GRPC_HOST"),
        ({**edge, "edge_peer_uri": ""}, "NETWEAVE_EDGE_PEER_URI"),
        ({**edge, "edge_client_ca": ""}, "NETWEAVE_EDGE_CLIENT_CA"),
        ({**edge, "edge_tls_key": str(tmp_path / "missing.key")}, "NETWEAVE_EDGE_TLS_KEY"),
        ({**edge, "edge_listen": "nowhere"}, "NETWEAVE_EDGE_LISTEN"),
        ({"edge_tls_cert": str(readable)}, "NETWEAVE_EDGE_LISTEN"),
    ]
    for settings, named in refusals:
        with pytest.raises(ValueError, match=named):
            GatewayConfig(**settings)
    monkeypatch.setenv("NETWEAVE_EDGE_SECRET", "left-over")
    with pytest.raises(ValueError, match="NETWEAVE_EDGE_SECRET"):
        GatewayConfig.from_env()
