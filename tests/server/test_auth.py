"""Identity parsing, the access policy and audit redaction (the pieces the interceptor and
the end-to-end security tests build on)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from devstack.stack import DEFAULT_POLICY
from server.auth.audit import redact
from server.auth.identity import common_name, decode_jwt_payload, identify, parse_xfcc
from server.auth.policy import (
    ADMIN,
    MAINTAINER,
    READER,
    SUBSCRIBER,
    AccessPolicy,
    required_permission,
)

URI = "spiffe://netweave.local/client/smo-north"
XFCC = f'By=spiffe://edge;Hash=ab12;Subject="CN=smo-north,O=netweave\\, dev";URI={URI};DNS=a'


def payload(claims: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


def test_xfcc_quoted_values_and_the_last_element_wins() -> None:
    assert parse_xfcc(XFCC)["URI"] == URI
    assert common_name(parse_xfcc(XFCC)["Subject"]) == "smo-north"
    chained = 'URI=spiffe://first;Subject="CN=a,O=b",' + XFCC
    assert parse_xfcc(chained)["URI"] == URI
    assert parse_xfcc('Subject="CN=x\\"y"')["Subject"] == 'CN=x"y'
    assert parse_xfcc("") == {}


def test_common_name() -> None:
    assert common_name("CN=smo-north,O=netweave development") == "smo-north"
    assert common_name("O=x\\,CN=fake,CN=real") == "real"
    assert common_name("O=only") == ""


def test_identity_needs_the_edge_secret() -> None:
    headers = {"x-forwarded-client-cert": XFCC, "x-jwt-payload": payload({"sub": "smo-south"})}
    forged = identify({**headers, "x-netweave-edge": "wrong"}, "secret")
    assert forged.via == "internal"
    assert forged.certificate_uri == ""
    genuine = identify({**headers, "x-netweave-edge": "secret"}, "secret")
    assert genuine.via == "certificate_and_token"
    assert (genuine.client, genuine.certificate_cn) == ("smo-south", "smo-north")
    anonymous = identify({"x-netweave-edge": "secret"}, "secret")
    assert not anonymous.authenticated


def test_unreadable_jwt_payload_is_no_token() -> None:
    assert decode_jwt_payload("%%%") == {}
    assert decode_jwt_payload(payload({"sub": "x"})) == {"sub": "x"}
    assert decode_jwt_payload(base64.urlsafe_b64encode(b"[1,2]").decode()) == {}


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


def test_example_policy_roles() -> None:
    policy = AccessPolicy.load(DEFAULT_POLICY)
    edge = {"x-netweave-edge": "s"}

    def roles(headers: dict[str, str]) -> tuple[str, ...]:
        return policy.roles_of(identify({**edge, **headers}, "s"))

    def cert(name: str) -> dict[str, str]:
        return {"x-forwarded-client-cert": f"URI=spiffe://netweave.local/client/{name}"}

    assert roles(cert("netweave-dev-client")) == (ADMIN,)
    assert roles(cert("smo-east")) == (READER, SUBSCRIBER)
    assert roles(cert("lab-probe")) == (READER,)
    # A token decides, whatever the certificate: its roles claim and its scopes.
    token = {"x-jwt-payload": payload({"sub": "bot", "roles": [MAINTAINER, "root"]})}
    assert roles({**cert("netweave-dev-client"), **token}) == (MAINTAINER,)
    scoped = {"x-jwt-payload": payload({"sub": "bot", "scope": "openid o2ims.read"})}
    assert roles(scoped) == (READER,)
    assert roles({}) == ()
    assert policy.roles_of(identify({}, "s")) == (ADMIN,)  # direct calls
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
        "callback": "https://user:[redacted]@smo.example/n",
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
