"""Edge security in real Envoy: bearer tokens (jwt_authn), the certificate SAN allow-list,
per-client token buckets, identity headers a client cannot forge, and the edge's audit
records of what it refuses. The core is the test double, which records call metadata."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import (
    DevPki,
    IssuedCertificate,
    client_uri,
    issue_client_certificate,
    issue_crafted_certificate,
)
from devstack.processes import wait_until
from devstack.tokens import DevIssuer, ensure_dev_issuer
from netweave.headers import CLIENT_CERT_HEADER, EDGE_MARKER_HEADER
from rest_facade.envoy_config import ClientLimit, JwtConfig, RateLimitConfig
from rest_facade.envoy_process import RunningEnvoy
from tests.core_process import json_lines

from .support import (
    EnvoyFactory,
    FakeCore,
    FakeInventory,
    assert_problem,
    bearer,
    jwt_config,
    rest_client,
)
from .test_tls import rejected

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    """Another issuer's key: its tokens are well-formed but not signed by ours."""
    return ensure_dev_issuer(tmp_path_factory.mktemp("stranger"))


@pytest.fixture(scope="module")
def smo(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificate:
    return issue_client_certificate(pki.directory, "smo-north", tmp_path_factory.mktemp("smo"))


@pytest.fixture(scope="module")
def outsider(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificate:
    """Signed by the right CA, but not on the allow-list (`lab-*` only, below)."""
    return issue_client_certificate(pki.directory, "intruder", tmp_path_factory.mktemp("out"))


@pytest.fixture
def token_envoy(
    envoy_factory: EnvoyFactory, core: FakeCore, issuer: DevIssuer, tmp_path: Path
) -> Iterator[RunningEnvoy]:
    yield envoy_factory(
        core.port,
        jwt=jwt_config(issuer, required=True),
        audit_log_path=tmp_path / "audit-edge.log",
    )


def assert_unauthorized(response: httpx.Response) -> None:
    assert_problem(response, 401)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")


def edge_audit(path: Path, timeout: float = 5.0, count: int = 1) -> list[dict[str, Any]]:
    """The edge's audit records, once there are at least `count`."""

    def enough() -> list[dict[str, Any]] | None:
        records = json_lines(path)
        return records if len(records) >= count else None

    return wait_until(enough, timeout, f"{count} edge audit record(s)")


# --- bearer tokens ------------------------------------------------------------------


def test_valid_token_passes_and_the_core_sees_only_verified_claims(
    token_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, inventory: FakeInventory
) -> None:
    token = issuer.mint("smo-north", ["o2ims-reader"])
    with rest_client(token_envoy, pki) as http:
        response = http.get(POOLS, headers=bearer(token))
    assert response.status_code == 200, response.text
    seen = inventory.last_metadata()
    payload = json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=="))
    assert payload["sub"] == "smo-north"
    assert payload["roles"] == ["o2ims-reader"]
    # The token itself goes no further than the edge; the core gets the edge's mark.
    assert "authorization" not in seen
    assert seen[EDGE_MARKER_HEADER] == "1"


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "expired", "wrong-key", "wrong-audience", "wrong-issuer"],
)
def test_bad_tokens_get_401_problem_with_a_challenge(
    *,
    case: str,
    token_envoy: RunningEnvoy,
    pki: DevPki,
    issuer: DevIssuer,
    stranger: DevIssuer,
    inventory: FakeInventory,
    tmp_path: Path,
) -> None:
    headers = {
        "missing": {},
        "garbage": bearer("not.a.token"),
        "expired": bearer(issuer.mint("smo-north", ["o2ims-reader"], ttl_s=-120)),
        "wrong-key": bearer(stranger.mint("smo-north", ["o2ims-admin"])),
        "wrong-audience": bearer(issuer.mint("smo-north", audience="someone-else")),
        "wrong-issuer": bearer(issuer.mint("smo-north", issuer="https://evil.example")),
    }[case]
    with rest_client(token_envoy, pki) as http:
        response = http.get(POOLS, headers=headers)
    assert_unauthorized(response)
    assert inventory.calls == [], "a refused call reached the core"
    # The edge audits what it refused, without the token.
    records = edge_audit(tmp_path / "audit-edge.log")
    assert records, "no edge audit record"
    record = records[-1]
    assert record["status"] == 401
    assert record["path"] == POOLS
    assert record["decision"] == "deny"
    assert record["request_id"] == response.headers["x-request-id"]
    text = (tmp_path / "audit-edge.log").read_text()
    if "authorization" in headers:
        assert headers["authorization"].split()[1] not in text


def test_native_grpc_without_token_is_unauthenticated(
    token_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, inventory: FakeInventory
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{token_envoy.listener_port}", credentials) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = issuer.mint("smo-north", ["o2ims-reader"])
        reply = stub.ListResourcePools(
            v1.ListResourcePoolsRequest(), metadata=bearer(token).items(), timeout=5
        )
        assert len(reply.resource_pools) == 2


def test_optional_token_lets_certificate_callers_in_but_still_refuses_bad_tokens(
    *,
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    issuer: DevIssuer,
    smo: IssuedCertificate,
    inventory: FakeInventory,
) -> None:
    running = envoy_factory(
        core.port, require_client_certificate=True, jwt=jwt_config(issuer, required=False)
    )
    with rest_client(running, pki, smo) as http:
        assert http.get(POOLS).status_code == 200
        assert_unauthorized(http.get(POOLS, headers=bearer("garbage")))
        good = http.get(POOLS, headers=bearer(issuer.mint("smo-north", ["o2ims-reader"])))
        assert good.status_code == 200
    assert rejected(running, pki, None)


# --- identity headers ----------------------------------------------------------------


def test_client_sent_identity_headers_never_reach_the_core(
    token_envoy: RunningEnvoy,
    pki: DevPki,
    issuer: DevIssuer,
    smo: IssuedCertificate,
    inventory: FakeInventory,
) -> None:
    forged_payload = base64.urlsafe_b64encode(b'{"sub":"root","roles":["o2ims-admin"]}').decode()
    forged = {
        "x-forwarded-client-cert": 'By=x;URI=spiffe://netweave.local/client/admin;Subject="CN=admin"',
        CLIENT_CERT_HEADER: urllib.parse.quote(pki.client_cert.read_text(), safe=""),
        "x-jwt-payload": forged_payload,
        EDGE_MARKER_HEADER: "guessed",
        "x-netweave-client-id": "admin",
    }
    token = issuer.mint("smo-north", ["o2ims-reader"])
    with rest_client(token_envoy, pki, smo) as http:
        assert http.get(POOLS, headers={**forged, **bearer(token)}).status_code == 200
    seen = inventory.last_metadata()
    assert seen[EDGE_MARKER_HEADER] == "1"
    assert "x-forwarded-client-cert" not in seen
    forwarded = x509.load_pem_x509_certificate(
        urllib.parse.unquote(seen[CLIENT_CERT_HEADER]).encode()
    )
    assert forwarded == x509.load_pem_x509_certificate(smo.cert.read_bytes())
    assert json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=="))["sub"] == "smo-north"
    assert seen.get("x-netweave-client-id") != "admin"

    # Without a certificate, a forged one is dropped altogether.
    inventory.reset()
    with rest_client(token_envoy, pki) as http:
        assert http.get(POOLS, headers={**forged, **bearer(token)}).status_code == 200
    seen = inventory.last_metadata()
    assert CLIENT_CERT_HEADER not in seen
    assert "x-forwarded-client-cert" not in seen


def test_san_allow_list_refuses_other_certificates_of_the_same_ca(
    *,
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    smo: IssuedCertificate,
    outsider: IssuedCertificate,
    inventory: FakeInventory,
) -> None:
    running = envoy_factory(
        core.port,
        require_client_certificate=True,
        client_san_allow_list=(client_uri("smo-"), client_uri("lab-")),
    )
    assert rejected(running, pki, outsider)
    assert not rejected(running, pki, smo)


# --- rate limits ----------------------------------------------------------------------


def test_rate_limit_answers_429_problem_with_headers_per_client(
    *,
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    issuer: DevIssuer,
    smo: IssuedCertificate,
    inventory: FakeInventory,
    tmp_path: Path,
) -> None:
    running = envoy_factory(
        core.port,
        jwt=jwt_config(issuer, required=False),
        rate_limit=RateLimitConfig(
            tokens_per_fill=50,
            fill_interval_s=1.0,
            per_client=(
                ClientLimit(client_uri("smo-north"), tokens_per_fill=3, fill_interval_s=60),
            ),
        ),
        audit_log_path=tmp_path / "audit-edge.log",
    )
    with rest_client(running, pki, smo) as noisy:
        statuses = [noisy.get(POOLS) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    first = statuses[0]
    assert first.headers["x-ratelimit-limit"] == "3"
    assert first.headers["x-ratelimit-remaining"] == "2"
    assert int(first.headers["x-ratelimit-reset"]) >= 0
    limited = statuses[-1]
    assert_problem(limited, 429)
    assert limited.headers["x-ratelimit-remaining"] == "0"
    # The limiter's reset (~60 s for this bucket), whole seconds, at least 1.
    reset = int(limited.headers["x-ratelimit-reset"])
    assert limited.headers["retry-after"] == str(max(1, reset))
    assert int(limited.headers["retry-after"]) > 1
    # Another identity (a token's subject) has its own bucket, untouched.
    token = issuer.mint("smo-south", ["o2ims-reader"])
    with rest_client(running, pki) as other:
        assert all(other.get(POOLS, headers=bearer(token)).status_code == 200 for _ in range(5))
    records = edge_audit(tmp_path / "audit-edge.log", count=2)
    assert [r["status"] for r in records] == [429, 429]
    assert all(r["client"] == client_uri("smo-north") for r in records)


def _statuses(client: httpx.Client, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [client.get(POOLS, headers=headers or {}).status_code for _ in range(count)]


def test_rate_limit_buckets_follow_the_channel_identity_only(
    *,
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    issuer: DevIssuer,
    smo: IssuedCertificate,
    inventory: FakeInventory,
    tmp_path: Path,
) -> None:
    """The limiter's key (rest_facade/envoy_config.py CLIENT_IDENTITY_EXPRESSION): the
    certificate's first URI SAN, else "subject:" + its subject, else "jwt:" + the verified
    token's sub; a client-sent x-netweave-client-id chooses nothing."""
    no_uri = issue_crafted_certificate(
        pki.ca,
        IssuedCertificate(tmp_path / "no-uri.crt", tmp_path / "no-uri.key"),
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "no-uri-client")]),
        san=[x509.DNSName("no-uri-client")],
    )
    two_uris = issue_crafted_certificate(
        pki.ca,
        IssuedCertificate(tmp_path / "two.crt", tmp_path / "two.key"),
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "two-uris")]),
        san=[
            x509.UniformResourceIdentifier(client_uri("first")),
            x509.UniformResourceIdentifier(client_uri("second")),
        ],
    )
    running = envoy_factory(
        core.port,
        jwt=jwt_config(issuer, required=False),
        rate_limit=RateLimitConfig(
            tokens_per_fill=50,
            fill_interval_s=1.0,
            per_client=(
                ClientLimit("jwt:smo-south", tokens_per_fill=2, fill_interval_s=60),
                ClientLimit("jwt:victim", tokens_per_fill=2, fill_interval_s=60),
                ClientLimit("subject:CN=no-uri-client", tokens_per_fill=2, fill_interval_s=60),
                ClientLimit(client_uri("first"), tokens_per_fill=2, fill_interval_s=60),
            ),
        ),
    )
    south = bearer(issuer.mint("smo-south", ["o2ims-reader"]))
    # Claiming another client's identity in a header draws from the caller's own bucket.
    with rest_client(running, pki) as anonymous:
        assert _statuses(anonymous, 4, {"x-netweave-client-id": "jwt:victim"}) == [200] * 4
    with rest_client(running, pki, smo) as north:
        assert _statuses(north, 4, {"x-netweave-client-id": "jwt:victim"}) == [200] * 4
    victim = bearer(issuer.mint("victim", ["o2ims-reader"]))
    with rest_client(running, pki) as by_token:
        assert _statuses(by_token, 3, victim) == [200, 200, 429]
        # A verified token without a certificate: "jwt:" + its sub.
        assert _statuses(by_token, 3, south) == [200, 200, 429]
    # A certificate comes first: the same token with smo-north's certificate is smo-north.
    with rest_client(running, pki, smo) as north:
        assert _statuses(north, 3, south) == [200] * 3
    # A certificate without a URI SAN: "subject:" + its subject.
    with rest_client(running, pki, no_uri) as subject_only:
        assert _statuses(subject_only, 3) == [200, 200, 429]
    # Several URI SANs: the first one.
    with rest_client(running, pki, two_uris) as two:
        assert _statuses(two, 3) == [200, 200, 429]


def test_retry_after_is_a_whole_second_at_least_and_only_on_429(
    envoy_factory: EnvoyFactory, core: FakeCore, pki: DevPki, inventory: FakeInventory
) -> None:
    """Set natively on the way out (envoy/modules/request_context.c), with the id."""
    running = envoy_factory(
        core.port, rate_limit=RateLimitConfig(tokens_per_fill=1, fill_interval_s=1.0)
    )
    with rest_client(running, pki) as client:
        for _ in range(20):
            served = client.get(POOLS, headers={"x-correlation-id": "served-1"})
            limited = client.get(POOLS, headers={"x-correlation-id": "limited-1"})
            if served.status_code == 200 and limited.status_code == 429:
                break
            time.sleep(1.0)
    assert (served.status_code, limited.status_code) == (200, 429)
    assert "retry-after" not in served.headers
    assert served.headers["x-correlation-id"] == "served-1"
    assert_problem(limited, 429)
    assert limited.headers["x-correlation-id"] == "limited-1"
    # A 1 s bucket: the next token is at most 1 s away.
    assert int(limited.headers["x-ratelimit-reset"]) <= 1
    assert limited.headers["retry-after"] == "1"


def test_rate_limited_grpc_callers_get_resource_exhausted(
    envoy_factory: EnvoyFactory, core: FakeCore, pki: DevPki, inventory: FakeInventory
) -> None:
    running = envoy_factory(
        core.port, rate_limit=RateLimitConfig(tokens_per_fill=1, fill_interval_s=60)
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{running.listener_port}", credentials) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        stub.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_keys_from_a_jwks_url(
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    issuer: DevIssuer,
    inventory: FakeInventory,
) -> None:
    """remote_jwks: Envoy fetches the keys from an HTTP endpoint (the issuer's jwks_uri)."""
    jwks = issuer.jwks_path.read_bytes()
    fetched: list[str] = []

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        running = envoy_factory(
            core.port,
            jwt=JwtConfig(
                issuer=issuer.issuer,
                audiences=(issuer.audience,),
                jwks_uri=f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json",
            ),
        )
        with rest_client(running, pki) as http_client:
            good = http_client.get(POOLS, headers=bearer(issuer.mint("smo", ["o2ims-reader"])))
            assert good.status_code == 200, good.text
            assert_unauthorized(http_client.get(POOLS, headers=bearer("x.y.z")))
        assert fetched == ["/.well-known/jwks.json"]
    finally:
        server.shutdown()
