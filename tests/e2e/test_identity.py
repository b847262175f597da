"""Identity nobody can forge, end to end: real Envoy, real certificates (crafted by the
tests from the dev CA the way an attacker holding a CA-signed certificate would have them),
the real core on its two listeners.

- certificates whose SAN or subject try to smuggle another identity get their own roles;
- identity headers sent straight to the core are refused on every listener;
- an edge with a wrong, foreign or rotated credential never gets internal roles;
- the edge credential is unreadable for other local users;
- idle reflection streams on the core cannot stall the REST API.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as subs
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as subs_grpc

from devstack.pki import (
    EDGE_URI,
    IssuedCertificate,
    client_uri,
    ensure_internal_pki,
    issue_crafted_certificate,
)
from devstack.processes import wait_until
from devstack.stack import DEFAULT_POLICY, LocalStack, StackConfig
from netweave.headers import CLIENT_CERT_HEADER, EDGE_MARKER_HEADER, JWT_PAYLOAD_HEADER
from rest_facade.envoy_process import RunningEnvoy, start_envoy
from tests.core_process import json_lines

CLOUD = "/o2ims-infrastructureInventory/v1"
POOLS = f"{CLOUD}/resourcePools"
SUBSCRIPTIONS = f"{CLOUD}/subscriptions"
ADMIN_CLAIMS = {"sub": "root", "roles": ["o2ims-admin"]}


def forged_payload() -> str:
    return base64.urlsafe_b64encode(json.dumps(ADMIN_CLAIMS).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # A state directory other local users can traverse, as a careless operator's would be
    # (pytest's own tmp dirs are 0700 and would make the file-permission test pass for
    # the wrong reason).
    state = Path(tempfile.mkdtemp(prefix="netweave-identity-"))
    state.chmod(0o755)
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    # A CN the attacker's subject spells inside another attribute.
    policy["clients"].insert(0, {"match": "cn:trusted-admin", "roles": ["o2ims-admin"]})
    policy_path = state / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    running = LocalStack(StackConfig.ephemeral(state, auth_policy=policy_path)).start()
    yield running
    running.stop()
    shutil.rmtree(state, ignore_errors=True)


def crafted(stack: LocalStack, name: str, subject: x509.Name, uris: list[str]) -> IssuedCertificate:
    out = stack.config.state_dir / "crafted"
    out.mkdir(exist_ok=True)
    return issue_crafted_certificate(
        stack.pki.ca,
        IssuedCertificate(out / f"{name}.crt", out / f"{name}.key"),
        subject=subject,
        san=[x509.UniformResourceIdentifier(uri) for uri in uris] or [x509.DNSName(name)],
    )


def rest(stack: LocalStack, cert: IssuedCertificate, base_url: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=base_url or stack.rest_url,
        verify=stack.client_tls(cert),
        timeout=10.0,
        trust_env=False,
    )


def audit_of(stack: LocalStack, request_id: str) -> dict[str, Any]:
    """The core's audit record of the request `request_id`, once it is written."""

    def found() -> list[dict[str, Any]]:
        return [r for r in json_lines(stack.audit_log) if r.get("request_id") == request_id]

    return wait_until(found, 5, f"the audit record of request {request_id}")[0]


def error_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "the refusal carries no google.rpc.Status"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo in the refusal")


def subscription_ids(stack: LocalStack) -> set[str]:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        reply = subs_grpc.SubscriptionServiceStub(channel).ListSubscriptions(
            subs.ListSubscriptionsRequest(), timeout=5
        )
    return {s.subscription_id for s in reply.subscriptions}


# --- certificates that try to be someone else ------------------------------------------


def test_a_san_with_an_injected_uri_gets_its_own_roles_only(stack: LocalStack) -> None:
    injected = f"{client_uri('plain-reader2')},URI={client_uri('netweave-dev-client')}"
    cert = crafted(
        stack, "injector", x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r2")]), [injected]
    )
    before = subscription_ids(stack)
    with rest(stack, cert) as http:
        assert http.get(POOLS).status_code == 200  # a reader, as the `client/*` rule says
        response = http.post(SUBSCRIPTIONS, json={"callback": "http://127.0.0.1:9/x"})
    assert response.status_code == 403, response.text
    record = audit_of(stack, response.headers["x-request-id"])
    assert record["certificate_uri"] == injected
    assert record["client"] == injected
    assert record["roles"] == ["o2ims-reader"]
    assert subscription_ids(stack) == before


def test_an_escaped_comma_in_the_subject_is_not_a_second_cn(stack: LocalStack) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "evil"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x,CN=trusted-admin"),
        ]
    )
    cert = crafted(stack, "cn-spoof", subject, [])
    with rest(stack, cert) as http:
        response = http.get(POOLS)
    assert response.status_code == 403, response.text
    record = audit_of(stack, response.headers["x-request-id"])
    assert record["client"] == "evil"
    assert record["roles"] == []
    # The control: a certificate whose CN really is trusted-admin is an admin.
    genuine = crafted(
        stack,
        "trusted-admin",
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trusted-admin")]),
        [],
    )
    with rest(stack, genuine) as http:
        assert http.get(POOLS).status_code == 200


def test_a_certificate_with_two_uri_sans_is_refused(stack: LocalStack) -> None:
    cert = crafted(
        stack,
        "two-uris",
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "two")]),
        [client_uri("smo-a"), client_uri("netweave-dev-client")],
    )
    with rest(stack, cert) as http:
        response = http.get(POOLS)
    assert response.status_code == 401, response.text
    assert "URI SANs" in response.json()["detail"]


# --- identity headers straight to the core ----------------------------------------------


FORGED_HEADER_SETS = {
    "token-claims": [(JWT_PAYLOAD_HEADER, forged_payload())],
    "edge-mark": [(EDGE_MARKER_HEADER, "1")],
    "certificate": [(CLIENT_CERT_HEADER, "x")],
    "xfcc": [("x-forwarded-client-cert", f"URI={client_uri('netweave-dev-client')}")],
    "all": [
        (JWT_PAYLOAD_HEADER, forged_payload()),
        (EDGE_MARKER_HEADER, "1"),
        ("x-forwarded-client-cert", f"URI={client_uri('netweave-dev-client')}"),
    ],
}


@pytest.mark.parametrize("forged", sorted(FORGED_HEADER_SETS))
def test_identity_headers_on_the_internal_listener_are_refused(
    stack: LocalStack, forged: str
) -> None:
    before = subscription_ids(stack)
    request = subs.CreateSubscriptionRequest(
        api_version="v1",
        subscription=subs.InventorySubscriptionInfo(callback="http://127.0.0.1:9/forged"),
    )
    with (
        grpc.insecure_channel(stack.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        subs_grpc.SubscriptionServiceStub(channel).CreateSubscription(
            request, metadata=FORGED_HEADER_SETS[forged], timeout=5
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(raised.value) == "IDENTITY_HEADERS_OUTSIDE_EDGE"
    assert subscription_ids(stack) == before


def edge_channel(stack: LocalStack, cert: IssuedCertificate | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=stack.internal_pki.ca_cert.read_bytes(),
        private_key=cert.key.read_bytes() if cert else None,
        certificate_chain=cert.cert.read_bytes() if cert else None,
    )
    return grpc.secure_channel(f"localhost:{stack.config.edge_port}", credentials)


def list_pools(
    channel: grpc.Channel, metadata: list[tuple[str, str]]
) -> v1.ListResourcePoolsResponse:
    reply: v1.ListResourcePoolsResponse = v1_grpc.InventoryServiceStub(channel).ListResourcePools(
        v1.ListResourcePoolsRequest(), metadata=metadata, timeout=5
    )
    return reply


def test_the_edge_listener_admits_only_the_edge(stack: LocalStack) -> None:
    forged = [(JWT_PAYLOAD_HEADER, forged_payload())]
    # Plaintext, no certificate, an SMO certificate of the dev CA: no TLS session at all.
    with (
        grpc.insecure_channel(f"127.0.0.1:{stack.config.edge_port}") as channel,
        pytest.raises(grpc.RpcError) as plaintext,
    ):
        list_pools(channel, forged)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    for cert in (None, stack.pki.client):
        with edge_channel(stack, cert) as channel, pytest.raises(grpc.RpcError) as raised:
            list_pools(channel, forged)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # A certificate of the internal CA that is not the edge's: the call is refused.
    impostor = stack.internal_pki.issue("impostor", "spiffe://netweave.local/impostor")
    with edge_channel(stack, impostor) as channel, pytest.raises(grpc.RpcError) as raised:
        list_pools(channel, forged)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(raised.value) == "NOT_THE_EDGE"


# --- an edge with the wrong credential ------------------------------------------------


@pytest.fixture
def second_edge(stack: LocalStack, tmp_path: Path) -> Iterator[Any]:
    """Start another Envoy in front of the same core, with a changed configuration."""
    started: list[RunningEnvoy] = []

    def start(**changes: Any) -> RunningEnvoy:
        name = f"edge{len(started)}"
        config = dataclasses.replace(
            stack.envoy_config(),
            listen_port=0,
            admin_socket=tmp_path / name / "admin.sock",
            audit_log_path=None,
            # Only the stack's own Envoy reports telemetry and serves stats.
            telemetry_port=None,
            stats_port=None,
            **changes,
        )
        envoy = start_envoy(config, workdir=tmp_path / name, log_path=tmp_path / f"{name}.log")
        started.append(envoy)
        return envoy

    yield start
    for envoy in started:
        envoy.stop()


def test_a_wrong_edge_credential_never_yields_internal_roles(
    stack: LocalStack, second_edge: Any, tmp_path: Path
) -> None:
    foreign = ensure_internal_pki(tmp_path / "foreign-internal")
    right = stack.core_tls()
    impostor = stack.internal_pki.issue("edge-impostor", "spiffe://netweave.local/not-edge")
    attempts: dict[str, tuple[dict[str, Any], set[int]]] = {
        # Envoy's certificate from another CA: the core's TLS refuses the handshake.
        "foreign-ca": (
            {"core_tls": dataclasses.replace(right, cert=foreign.edge.cert, key=foreign.edge.key)},
            {503},
        ),
        # Right CA, wrong identity: the core refuses the call.
        "wrong-san": (
            {"core_tls": dataclasses.replace(right, cert=impostor.cert, key=impostor.key)},
            {401},
        ),
        # Misconfigured to the internal listener in plaintext: the edge's mark is refused.
        "internal-port": ({"core_tls": None, "core_port": stack.config.grpc_port}, {401}),
    }
    before = subscription_ids(stack)
    for name, (changes, statuses) in attempts.items():
        envoy = second_edge(**changes)
        with rest(stack, stack.pki.client, base_url=envoy.url) as http:  # the dev admin
            read = http.get(POOLS)
            write = http.post(SUBSCRIPTIONS, json={"callback": f"http://127.0.0.1:9/{name}"})
        assert read.status_code in statuses, (name, read.status_code, read.text)
        assert write.status_code in statuses, (name, write.status_code, write.text)
        assert read.headers["content-type"] == "application/problem+json"
    assert subscription_ids(stack) == before
    # No call of those edges was ever recorded as an internal one.
    for line in stack.audit_log.read_text().splitlines():
        record = json.loads(line)
        if record.get("path", "").startswith("/o2ims-"):
            assert record["via"] != "internal", record


def test_a_rotated_edge_certificate_keeps_every_client_its_identity(
    stack: LocalStack, second_edge: Any
) -> None:
    rotated = stack.internal_pki.issue("edge-rotated", EDGE_URI)
    envoy = second_edge(
        core_tls=dataclasses.replace(stack.core_tls(), cert=rotated.cert, key=rotated.key)
    )
    with rest(stack, stack.pki.client, base_url=envoy.url) as http:
        response = http.get(POOLS)
    assert response.status_code == 200, response.text
    record = audit_of(stack, response.headers["x-request-id"])
    assert (record["via"], record["client"]) == ("certificate", client_uri("netweave-dev-client"))


def test_the_core_serves_a_renewed_certificate_without_a_restart(stack: LocalStack) -> None:
    edge = stack.internal_pki.edge
    before = _served_certificate(stack, edge)
    core = stack.internal_pki.core
    backup = (core.cert.read_bytes(), core.key.read_bytes())
    try:
        renewed = stack.internal_pki.issue(
            "core-renewed", "spiffe://netweave.local/core", server=True
        )
        shutil.copy(renewed.key, core.key)
        shutil.copy(renewed.cert, core.cert)
        after = _served_certificate(stack, edge)
        assert after != before
        assert after == x509.load_pem_x509_certificate(renewed.cert.read_bytes())
    finally:
        core.cert.write_bytes(backup[0])
        core.key.write_bytes(backup[1])


def _served_certificate(stack: LocalStack, edge: IssuedCertificate) -> x509.Certificate:
    """The certificate the core's edge listener presents on a new connection."""
    context = ssl.create_default_context(cafile=str(stack.internal_pki.ca_cert))
    context.load_cert_chain(str(edge.cert), str(edge.key))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", stack.config.edge_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# --- the edge credential on disk and in Envoy ---------------------------------------


NOBODY_SCAN = """
import os, sys, json
secrets = json.loads(sys.argv[2])
found, read, closed = [], [], []
for root, dirs, files in os.walk(sys.argv[1], onerror=lambda error: closed.append(error.filename)):
    for name in files:
        path = os.path.join(root, name)
        try:
            data = open(path, "rb").read()
        except OSError:
            closed.append(path)
            continue
        read.append(path)
        found += [path for secret in secrets if secret.encode() in data]
print(json.dumps({"found": found, "read": read, "closed": closed}))
"""


def _key_body(path: Path) -> str:
    """The base64 body of a PEM private key: what would leak if any copy were readable."""
    lines = path.read_text().strip().splitlines()
    return "".join(lines[1:-1])[:48]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_no_other_local_user_can_read_the_edge_credential(stack: LocalStack) -> None:
    internal = stack.internal_pki
    secrets = [
        _key_body(internal.edge.key),
        _key_body(internal.core.key),
        _key_body(internal.ca_key),
    ]
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            NOBODY_SCAN,
            str(stack.config.state_dir),
            json.dumps(secrets),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    scan = json.loads(result.stdout)
    assert scan["found"] == []
    # The scan really read the state directory (Envoy's config and the logs are readable to
    # it), and the internal PKI was closed to it.
    assert str(stack.config.state_dir / "envoy" / "envoy.yaml") in scan["read"]
    assert any(path.endswith(".log") for path in scan["read"])
    assert str(internal.directory) in scan["closed"]
    assert not any(path.startswith(str(internal.directory) + "/") for path in scan["read"])
    assert oct(internal.edge.key.stat().st_mode & 0o777) == "0o600"
    assert oct(internal.directory.stat().st_mode & 0o777) == "0o700"
    # Envoy's rendered configuration and its SDS resource files (rest_facade/envoy_sds.py)
    # name the files; they carry no key material.
    envoy_dir = stack.config.state_dir / "envoy"
    rendered = "".join(
        path.read_text() for path in [envoy_dir / "envoy.yaml", *envoy_dir.glob("sds/*.yaml")]
    )
    assert all(secret not in rendered for secret in secrets)
    assert str(internal.edge.key) in rendered


# --- idle streams on the core ---------------------------------------------------------


def test_idle_reflection_streams_do_not_stall_the_api(stack: LocalStack) -> None:
    stop = threading.Event()

    def idle_requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        stop.wait(30)
        return
        yield  # a request stream that never sends anything

    channels = [grpc.insecure_channel(stack.grpc_address) for _ in range(20)]
    calls = [
        reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            idle_requests(), timeout=30
        )
        for channel in channels
    ]
    try:
        # Over the cap a stream ends at once; the admitted ones stay open and idle.
        def exhausted() -> int:
            return sum(
                1
                for call in calls
                if call.done() and call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            )

        wait_until(lambda: exhausted() >= 16, 10, "streams over the cap to be refused")
        # 20 streams, at most half of the core's 8 workers for streams: 4 stay open.
        assert exhausted() == 16
        # Meanwhile REST through the edge and unary gRPC on the internal listener answer.
        with rest(stack, stack.pki.client) as http:
            started = time.monotonic()
            for _ in range(20):
                assert http.get(POOLS).status_code == 200
            assert time.monotonic() - started < 10
        with grpc.insecure_channel(stack.grpc_address) as channel:
            assert len(list_pools(channel, []).resource_pools) >= 1
    finally:
        stop.set()
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()


# --- TLS session resumption ----------------------------------------------------------------


def status_on(sock: ssl.SSLSocket) -> int:
    sock.sendall(f"GET {CLOUD} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_client_offering_its_last_session_keeps_its_identity(
    stack: LocalStack, version: ssl.TLSVersion
) -> None:
    """Envoy does not validate a client certificate again on a resumed session (it reports
    it not validated), so a resumed client would lose its identity (401) and a certificate
    revoked since would keep its session: the edge resumes no session, every connection is
    a full handshake with its certificate checked."""
    context = stack.client_tls()
    context.set_alpn_protocols(["http/1.1"])
    context.minimum_version = context.maximum_version = version
    session = None
    for attempt in range(2):
        with (
            socket.create_connection(("127.0.0.1", stack.config.rest_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost", session=session) as sock,
        ):
            assert status_on(sock) == 200, f"connection {attempt + 1}"
            assert not sock.session_reused
            session = sock.session
    assert session is not None
