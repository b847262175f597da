"""Edge security end to end: real Envoy with real certificates and real tokens in front of
the real core (the `make run` posture: certificate required, token optional, the example
access policy), the role matrix over every REST endpoint, the audit trail and the metrics."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as subs
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as subs_grpc

from devstack.load import offer
from devstack.pki import IssuedCertificate, client_uri, ensure_dev_pki, issue_client_certificate
from devstack.processes import wait_until
from devstack.stack import REPO, LocalStack
from devstack.tokens import ensure_dev_issuer
from rest_facade.http_rules import HttpRule, read_rules
from tests.core_process import json_lines

from .conftest import problem, start_stack

CLOUD = "/o2ims-infrastructureInventory/v1"
POOLS = f"{CLOUD}/resourcePools"
SUBSCRIPTIONS = f"{CLOUD}/subscriptions"
# Loopback callbacks are allowed for this stack only (production refuses them).
CALLBACK_ENV = {
    "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
    "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8",
}
ROLES = ("o2ims-reader", "o2ims-subscriber", "o2ims-maintainer", "o2ims-admin")
# What each role may reach, written out by hand from the issue (not computed by the code
# under test): inventory reads, alarm reads, subscriptions (inventory and alarm).
# Alarm writes (acknowledge/clear, the alarm service configuration): maintainers and admins.
MAY = {
    "o2ims-reader": {"inventory", "alarms"},
    "o2ims-subscriber": {"subscriptions"},
    "o2ims-maintainer": {"alarms", "alarm-writes"},
    "o2ims-admin": {"inventory", "alarms", "alarm-writes", "subscriptions"},
}
NO_SUCH_ID = "00000000-0000-4000-8000-00000000dead"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, CALLBACK_ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def certs(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("clients")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return {
        "smo": issue_client_certificate(stack.pki.directory, "smo-north", out),
        "lab": issue_client_certificate(stack.pki.directory, "lab-probe", out),
        "expired": issue_client_certificate(
            stack.pki.directory, "smo-old", out, not_before=past, not_after=past + dt.timedelta(1)
        ),
        "foreign": ensure_dev_pki(tmp_path_factory.mktemp("foreign")).client,
    }


def client(
    stack: LocalStack, cert: IssuedCertificate | None, token: str | None = None
) -> httpx.Client:
    tls = ssl.create_default_context(cafile=str(stack.pki.ca_cert))
    if cert is not None:
        tls.load_cert_chain(str(cert.cert), str(cert.key))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=stack.rest_url, verify=tls, timeout=10.0, headers=headers, trust_env=False
    )


def refused(stack: LocalStack, cert: IssuedCertificate | None) -> bool:
    try:
        with client(stack, cert) as http:
            http.get(POOLS)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError):
        return True
    return False


# --- certificates -------------------------------------------------------------------


def test_certificates_none_foreign_expired_refused_valid_served(
    stack: LocalStack, certs: dict[str, Any]
) -> None:
    assert refused(stack, None)
    assert refused(stack, certs["foreign"])
    assert refused(stack, certs["expired"])
    with client(stack, certs["smo"]) as http:
        assert http.get(POOLS).status_code == 200


def test_forged_xfcc_never_changes_who_the_core_sees(
    stack: LocalStack, certs: dict[str, Any]
) -> None:
    # lab-probe is a reader; it claims to be the dev client (an admin) in a forged XFCC.
    forged = {
        "x-forwarded-client-cert": f"URI={client_uri('netweave-dev-client')};"
        'Subject="CN=netweave-dev-client"',
        "x-netweave-edge": "guess",
    }
    body = {"callback": "http://127.0.0.1:9/notify", "consumerSubscriptionId": "forged"}
    with client(stack, certs["lab"]) as http:
        response = http.post(SUBSCRIPTIONS, json=body, headers=forged)
    detail = problem(response, 403)["detail"]
    assert client_uri("lab-probe") in detail
    record = audit_record(stack, response.headers["x-request-id"])
    assert record["client"] == client_uri("lab-probe")
    assert record["decision"] == "deny"


# --- tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["garbage", "expired", "wrong-key", "wrong-audience"])
def test_bad_tokens_are_401_problems(
    stack: LocalStack, certs: dict[str, Any], case: str, tmp_path: Path
) -> None:
    stranger = ensure_dev_issuer(tmp_path)
    token = {
        "garbage": "abc.def.ghi",
        "expired": stack.issuer.mint("smo-north", ["o2ims-reader"], ttl_s=-300),
        "wrong-key": stranger.mint("smo-north", ["o2ims-admin"]),
        "wrong-audience": stack.issuer.mint("smo-north", ["o2ims-reader"], audience="other"),
    }[case]
    with client(stack, certs["smo"], token) as http:
        response = http.get(POOLS)
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer ")
    record = audit_record(stack, response.headers["x-request-id"])
    assert (record["source"], record["status"]) == ("edge", 401)
    with client(stack, certs["smo"], stack.issuer.mint("smo-north", ["o2ims-reader"])) as http:
        assert http.get(POOLS).status_code == 200


# --- role matrix ----------------------------------------------------------------------


def family(rule: HttpRule) -> str:
    path = rule.template.source
    if "ubscriptions" in path:
        return "subscriptions"
    if path.startswith("/o2ims-infrastructureMonitoring"):
        return "alarms" if rule.http_method == "GET" else "alarm-writes"
    return "inventory"


def rules() -> list[HttpRule]:
    return read_rules(REPO / "gen" / "o2ims.pb")


class Fixtures:
    """Concrete paths and bodies for every rule, prepared by the admin (the dev client);
    subscriptions by `owner` when given (a subscriber sees only its own)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.admin = client(stack, stack.pki.client)

    def concrete(self, rule: HttpRule, owner: httpx.Client | None = None) -> str:
        parts: list[str] = []
        for segment in rule.template.segments:
            if segment.variable is None or segment.text != "*":
                parts.append(segment.text)
                continue
            parts.append(self.some_id("/" + "/".join(parts), segment.variable, owner))
        return "/" + "/".join(parts)

    def some_id(self, collection: str, variable: str, owner: httpx.Client | None) -> str:
        first, *rest = variable.split("_")
        field = first + "".join(word.title() for word in rest)
        if collection.endswith("ubscriptions"):
            return self.new_subscription(collection, owner or self.admin)
        items = self.admin.get(collection).raise_for_status().json()
        if collection.endswith("/alarms"):
            # One not acknowledged yet: each writer role's acknowledgement must succeed
            # (another role's earlier one would make it a 409).
            items = [item for item in items if not item["alarmAcknowledged"]]
        return str(items[0][field]) if items else NO_SUCH_ID

    def new_subscription(self, collection: str, owner: httpx.Client) -> str:
        created = owner.post(collection, json=self.body(collection)).raise_for_status()
        location: str = created.headers["location"]
        return location.rsplit("/", 1)[1]

    @staticmethod
    def write_body(path: str) -> dict[str, Any]:
        """A valid PUT/PATCH body: acknowledge an alarm, or the alarm service configuration
        as it is by default."""
        if path.endswith("alarmServiceConfiguration"):
            return {"retentionPeriod": 14, "extensions": {}}
        return {"alarmAcknowledged": True}

    @staticmethod
    def body(collection: str) -> dict[str, Any]:
        return {
            "callback": f"http://127.0.0.1:9/{uuid.uuid4()}",
            "consumerSubscriptionId": str(uuid.uuid4()),
        }


@pytest.fixture(scope="module")
def fixtures(stack: LocalStack) -> Iterator[Fixtures]:
    prepared = Fixtures(stack)
    yield prepared
    prepared.admin.close()


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix_every_endpoint(
    stack: LocalStack, certs: dict[str, Any], fixtures: Fixtures, role: str
) -> None:
    token = stack.issuer.mint(f"matrix-{role}", [role])
    outcomes: list[str] = []
    with client(stack, certs["lab"], token) as http:
        for rule in rules():
            path = fixtures.concrete(rule, http if "subscriptions" in MAY[role] else None)
            body = fixtures.body(path) if rule.http_method == "POST" else None
            if rule.http_method in ("PUT", "PATCH"):
                body = fixtures.write_body(path)
            response = http.request(rule.http_method, path, json=body)
            allowed = family(rule) in MAY[role]
            line = f"{role} {rule.http_method} {path} -> {response.status_code}"
            outcomes.append(line)
            if allowed:
                ok = {200, 201, 204} | ({404} if NO_SUCH_ID in path else set())
                assert response.status_code in ok, line + " " + response.text
            else:
                assert problem(response, 403)["detail"], line
            record = audit_record(stack, response.headers["x-request-id"])
            assert record["roles"] == [role]
            assert record["status"] == response.status_code
            assert record["decision"] == ("allow" if allowed else "deny")
            assert record["token_subject"] == f"matrix-{role}"
            if rule.http_method in ("POST", "DELETE"):
                assert "body" in record
    assert len(outcomes) == len(rules())


def test_native_grpc_through_envoy_is_authorized_the_same_way(
    stack: LocalStack, certs: dict[str, Any]
) -> None:
    lab = certs["lab"]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=stack.pki.ca_cert.read_bytes(),
        private_key=lab.key.read_bytes(),
        certificate_chain=lab.cert.read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{stack.config.rest_port}", credentials) as channel:
        pools = v1_grpc.InventoryServiceStub(channel).ListResourcePools(
            v1.ListResourcePoolsRequest(), timeout=5
        )
        assert len(pools.resource_pools) == 2
        with pytest.raises(grpc.RpcError) as denied:
            subs_grpc.SubscriptionServiceStub(channel).CreateSubscription(
                subs.CreateSubscriptionRequest(
                    api_version="v1",
                    subscription=subs.InventorySubscriptionInfo(callback="http://127.0.0.1:9/x"),
                ),
                timeout=5,
            )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = dict(denied.value.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "PERMISSION_DENIED"
    assert info.metadata["permission"] == "subscriptions.write"


# --- audit trail and metrics -----------------------------------------------------------


def audit_records(
    stack: LocalStack, matches: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The core's and the edge's audit records `matches` accepts, once there is one."""

    def found() -> list[dict[str, Any]]:
        trail = json_lines(stack.audit_log) + json_lines(stack.edge_audit_log)
        return [record for record in trail if matches(record)]

    return wait_until(found, 5, "the audit record")


def audit_record(stack: LocalStack, request_id: str) -> dict[str, Any]:
    return audit_records(stack, lambda record: record.get("request_id") == request_id)[0]


def test_audit_records_have_the_fields_and_no_tokens(
    stack: LocalStack, certs: dict[str, Any]
) -> None:
    token = stack.issuer.mint("smo-north", ["o2ims-subscriber"])
    body = {"callback": "http://127.0.0.1:9/audited", "consumerSubscriptionId": "audit"}
    with client(stack, certs["smo"], token) as http:
        created = http.post(SUBSCRIPTIONS, json=body)
    assert created.status_code == 201, created.text
    record = audit_record(stack, created.headers["x-request-id"])
    assert record["client"] == "smo-north"
    assert record["certificate_uri"] == client_uri("smo-north")
    assert "CN=smo-north" in record["certificate_subject"]
    assert record["role"] == "o2ims-subscriber"
    assert record["operation"] == "/o2ims.subscriptions.v1.SubscriptionService/CreateSubscription"
    assert (record["method"], record["path"], record["status"]) == ("POST", SUBSCRIPTIONS, 201)
    assert record["body"]["subscription"]["callback"] == body["callback"]
    assert dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).tzinfo is not None
    # No token (nor any part of its signature) in any log the stack wrote.
    signature = token.rsplit(".", 1)[1]
    for log in stack.logs.iterdir():
        text = log.read_text(errors="replace")
        assert token not in text and signature not in text, log


def test_auth_metrics(stack: LocalStack, certs: dict[str, Any]) -> None:
    with client(stack, certs["lab"]) as http:
        http.get(POOLS).raise_for_status()
        assert http.delete(f"{SUBSCRIPTIONS}/{NO_SUCH_ID}").status_code == 403
    text = httpx.get(f"{stack.ops_url}/metrics", timeout=5).text
    assert 'o2ims_auth_total{result="success",via="certificate"}' in text
    assert 'o2ims_authz_total{result="denied",role="o2ims-reader"}' in text
    assert 'o2ims_authz_total{result="allowed",role="o2ims-reader"}' in text


# --- rate limits -------------------------------------------------------------------------


RATE = 20  # requests per second per client


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, rate_limit_rps=RATE, rate_limit_burst=2)
    yield running
    running.stop()


def test_one_client_flooding_is_held_to_its_rate_and_others_never_see_429(
    limited_stack: LocalStack, tmp_path: Path
) -> None:
    stack = limited_stack
    a_cert = issue_client_certificate(stack.pki.directory, "smo-a", tmp_path)
    b_cert = issue_client_certificate(stack.pki.directory, "smo-b", tmp_path)
    with ThreadPoolExecutor(2) as pool:
        noisy = pool.submit(offer, lambda: client(stack, a_cert), POOLS, 3 * RATE, 4.0)
        quiet = pool.submit(offer, lambda: client(stack, b_cert), POOLS, 4, 4.0, 2)
        a, b = noisy.result(), quiet.result()
    # A: R admitted (+-10%), the rest 429 with the rate-limit headers and a problem body.
    assert abs(a.admitted_rate - RATE) <= 0.1 * RATE, (a.admitted, a.elapsed_s, a.statuses)
    assert set(a.statuses) == {200, 429}
    limited = a.sample_limited
    assert limited is not None
    problem(limited, 429)
    assert limited.headers["x-ratelimit-limit"] == "2"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["retry-after"]) >= 1
    # B: its own bucket, never touched by A.
    assert b.statuses == Counter({200: b.offered}), b.statuses


# --- a listener where neither credential is required -------------------------------------


@pytest.fixture(scope="module")
def open_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, require_client_certificate=False)
    yield running
    running.stop()


def test_callers_with_neither_certificate_nor_token_are_refused_by_the_core(
    open_edge: LocalStack,
) -> None:
    with client(open_edge, None) as http:
        response = http.get(POOLS)
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer ")
    record = audit_record(open_edge, response.headers["x-request-id"])
    assert (record["source"], record["via"], record["decision"]) == ("core", "none", "deny")
    credentials = grpc.ssl_channel_credentials(root_certificates=open_edge.pki.ca_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{open_edge.config.rest_port}", credentials) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = open_edge.issuer.mint("smo-west", ["o2ims-reader"])
        reply = stub.ListResourcePools(
            v1.ListResourcePoolsRequest(), metadata=[("authorization", f"Bearer {token}")]
        )
    assert len(reply.resource_pools) == 2


def test_direct_calls_to_the_core_are_audited_with_the_caller_address(stack: LocalStack) -> None:
    marker = f"direct-{uuid.uuid4()}"
    with grpc.insecure_channel(stack.grpc_address) as channel:
        subs_grpc.SubscriptionServiceStub(channel).CreateSubscription(
            subs.CreateSubscriptionRequest(
                api_version="v1",
                subscription=subs.InventorySubscriptionInfo(
                    callback="http://127.0.0.1:9/direct", consumer_subscription_id=marker
                ),
            ),
            timeout=5,
        )
    [record] = audit_records(
        stack,
        lambda r: r.get("body", {}).get("subscription", {}).get("consumerSubscriptionId") == marker,
    )
    assert (record["via"], record["role"], record["decision"]) == (
        "internal",
        "o2ims-admin",
        "allow",
    )
    assert record["client"].startswith("internal:ipv4:127.0.0.1:")
