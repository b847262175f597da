"""Credentials at the edge: never from the URL, never in a log, never valid forever.

A query string that carries a credential-like parameter is refused with a 400 ProblemDetails
before jwt_authn (the request context filter, envoy/modules/request_context.c), with the value
redacted first, so neither the access log nor the edge audit log holds it. jwt_authn reads
tokens from the Authorization header only, demands `exp`, and refuses an `exp` further away
than JwtConfig.max_lifetime_s."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devstack.pki import DevPki
from devstack.processes import wait_until
from devstack.tokens import DevIssuer
from rest_facade import envoy_modules
from rest_facade.envoy_config import JWT_CACHE_SIZE, render
from rest_facade.envoy_process import RunningEnvoy
from tests.core_process import json_lines

from .support import (
    EnvoyFactory,
    FakeCore,
    FakeInventory,
    assert_problem,
    bearer,
    envoy_config,
    jwt_config,
    raw_https_request,
    rest_client,
)

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"


@pytest.fixture
def logged_envoy(
    envoy_factory: EnvoyFactory, core: FakeCore, issuer: DevIssuer, tmp_path: Path
) -> Iterator[RunningEnvoy]:
    yield envoy_factory(
        core.port,
        jwt=jwt_config(issuer),
        access_log_path=tmp_path / "access.log",
        # The tests read the lines of requests that succeed too.
        access_log_requests="all",
        audit_log_path=tmp_path / "audit-edge.log",
    )


def signed(issuer: DevIssuer, claims: dict[str, Any]) -> str:
    """A token with exactly `claims`, signed with the issuer's key (mint always adds exp)."""
    key = serialization.load_pem_private_key(issuer.key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "RS256", "typ": "JWT", "kid": issuer.key_id}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def log_lines(path: Path, request_ids: set[str], timeout: float = 5.0) -> list[dict[str, Any]]:
    """The JSON lines of `path` for `request_ids`, once all of them are there."""

    def found() -> list[dict[str, Any]] | None:
        lines = [line for line in json_lines(path) if line.get("request_id") in request_ids]
        return lines if {line["request_id"] for line in lines} == request_ids else None

    return wait_until(found, timeout, f"all of {request_ids} logged in {path}")


# --- the rendered configuration -------------------------------------------------------


def settings_of(filters: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The one jwt_authn provider's settings in a rendered filter list."""
    providers = filters[names.index("envoy.filters.http.jwt_authn")]["typed_config"]["providers"]
    (settings,) = providers.values()
    return dict(settings)


def test_jwt_authn_reads_the_header_only_and_bounds_lifetimes(
    pki: DevPki, descriptor: Path, issuer: DevIssuer
) -> None:
    config = envoy_config(pki, 50051, jwt=jwt_config(issuer, max_lifetime_s=7200))
    manager = yaml.safe_load(render(config))["static_resources"]["listeners"][0]
    filters = manager["filter_chains"][0]["filters"][-1]["typed_config"]["http_filters"]
    names = [item["name"] for item in filters]
    # The guard runs inside the first filter, right after the request context (correlation
    # id and route template: it reads neither the query nor any credential): one filter.
    assert names[0] == "netweave.request_context"
    assert "netweave.request_guard" not in names
    assert filters[0]["typed_config"]["filter_name"] == envoy_modules.REQUEST_CONTEXT
    source = (envoy_modules.SOURCE_DIR / f"{envoy_modules.REQUEST_CONTEXT}.c").read_text()
    assert source.rindex("return guard_request(") > source.rindex("metadata_string_batch(")
    assert names.index("netweave.request_context") < names.index("envoy.filters.http.jwt_authn")
    # A client's repeated token is verified once per worker, not on every call.
    settings = settings_of(filters, names)
    assert settings["jwt_cache_config"] == {"jwt_cache_size": JWT_CACHE_SIZE}
    assert settings["from_headers"] == [{"name": "authorization", "value_prefix": "Bearer "}]
    assert "from_params" not in settings
    assert settings["require_expiration"] is True
    assert settings["max_lifetime"] == "7200s"


# --- tokens in the URL ------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "access_token={token}",
        "api_key=secret123",
        "API_KEY=secret123",
        "%61ccess_token={token}",  # "a" percent-encoded
        "filter=(eq,name,x)&token={token}",
        "password=secret123&client_secret=secret123",
    ],
)
def test_a_credential_in_the_query_string_is_refused_and_never_logged(
    *,
    query: str,
    logged_envoy: RunningEnvoy,
    pki: DevPki,
    issuer: DevIssuer,
    inventory: FakeInventory,
    tmp_path: Path,
) -> None:
    token = issuer.mint("smo-north", ["o2ims-reader"])
    url = f"{POOLS}?{query.format(token=token)}"
    with rest_client(logged_envoy, pki) as http:
        # A valid token in the header does not make the URL acceptable.
        refused = http.get(url, headers=bearer(token))
        # And a refusal the edge audits (a bad token), to show the audit log is written.
        audited = http.get(POOLS, headers=bearer("not.a.token"))

    problem = assert_problem(refused, 400)
    assert "not accepted in the URL" in problem["detail"]
    assert "Authorization header" in problem["detail"]
    assert inventory.calls == [], "a request with a credential in its URL reached the core"
    assert audited.status_code == 401

    request_ids = {refused.headers["x-request-id"], audited.headers["x-request-id"]}
    (line,) = [
        entry
        for entry in log_lines(tmp_path / "access.log", request_ids)
        if entry["request_id"] == refused.headers["x-request-id"]
    ]
    assert line["path"] == POOLS
    assert "=REDACTED" in line["query"]
    log_lines(tmp_path / "audit-edge.log", {audited.headers["x-request-id"]})
    for log in ("access.log", "audit-edge.log"):
        text = (tmp_path / log).read_text()
        assert token not in text, f"the token reached {log}"
        assert "secret123" not in text, f"the secret reached {log}"


@pytest.mark.parametrize(
    ("query", "redacted", "name"),
    [
        # Empty parts are dropped; "+" is a space and names are trimmed and lower-cased; a
        # credential name without "=" is kept as it is (it names the parameter refused).
        (
            "&&x=1&+Access_Token+=abc&&token&y",
            "x=1&+Access_Token+=REDACTED&token&y",
            "access_token",
        ),
        ("token&x=1", "token&x=1", "token"),
        ("%09PassWord%0D=abc", "%09PassWord%0D=REDACTED", "password"),
        ("x=1&apikey=a=b&id_token=", "x=1&apikey=REDACTED&id_token=REDACTED", "apikey"),
    ],
)
def test_a_refused_query_is_redacted_part_by_part(
    *,
    query: str,
    redacted: str,
    name: str,
    logged_envoy: RunningEnvoy,
    pki: DevPki,
    inventory: FakeInventory,
    tmp_path: Path,
) -> None:
    with rest_client(logged_envoy, pki) as http:
        refused = http.get(f"{POOLS}?{query}")
    problem = assert_problem(refused, 400)
    assert f"(query parameter '{name}')" in problem["detail"]
    assert inventory.calls == []
    request_id = refused.headers["x-request-id"]
    (line,) = log_lines(tmp_path / "access.log", {request_id})
    assert line["query"] == redacted


@pytest.mark.parametrize(
    "query",
    ["%2561ccess_token=x", "api%20key=x", "x=%26token%3D1", "access_token_x=1", "%=1&%zz=2"],
)
def test_names_that_only_decode_to_a_credential_twice_or_not_at_all_pass(
    *, query: str, logged_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, tmp_path: Path
) -> None:
    token = issuer.mint("smo-north", ["o2ims-reader"])
    with rest_client(logged_envoy, pki) as http:
        response = http.get(f"{POOLS}?{query}", headers=bearer(token))
    assert response.status_code == 200, response.text
    (line,) = log_lines(tmp_path / "access.log", {response.headers["x-request-id"]})
    assert line["query"] == query


def test_the_guards_refusal_carries_the_correlation_id_and_a_cached_token_still_works(
    logged_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, inventory: FakeInventory
) -> None:
    """The guard runs inside the request context filter: its own refusal must still carry
    the caller's correlation id. And a token verified once (jwt_authn's cache) passes again,
    while a forged one with the same claims is refused though a good token is cached."""
    token = issuer.mint("smo-north", ["o2ims-reader"])
    with rest_client(logged_envoy, pki) as http:
        refused = http.get(f"{POOLS}?api_key=secret123", headers={"x-correlation-id": "corr-42"})
        first = http.get(POOLS, headers=bearer(token))
        again = http.get(POOLS, headers=bearer(token))
        header, payload, _signature = token.split(".")
        forged = http.get(POOLS, headers=bearer(f"{header}.{payload}.AAAA"))
    assert_problem(refused, 400)
    assert refused.headers["x-correlation-id"] == "corr-42"
    assert refused.headers["x-request-id"] == "corr-42"
    assert first.status_code == again.status_code == 200
    assert forged.status_code == 401


def test_a_request_envoy_refuses_before_any_filter_does_not_log_its_query(
    logged_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, tmp_path: Path
) -> None:
    """No Host header: the connection manager answers 400 before the request guard runs,
    so only the access log's own format keeps the token out (path without query)."""
    token = issuer.mint("smo-north", ["o2ims-reader"])
    head = f"GET {POOLS}?access_token={token} HTTP/1.1\r\nX-No-Host: 1".encode()

    status, _, _ = raw_https_request(logged_envoy, pki, head)

    assert status == 400
    access_log = tmp_path / "access.log"
    wait_until(lambda: "missing_host_header" in access_log.read_text(), 5, "the refusal logged")
    assert token not in access_log.read_text()


def test_parameters_that_merely_look_alike_pass(
    logged_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, inventory: FakeInventory
) -> None:
    token = issuer.mint("smo-north", ["o2ims-reader"])
    with rest_client(logged_envoy, pki) as http:
        # Not a credential name: not the guard's business (unknown to the path, so dropped).
        response = http.get(f"{POOLS}?tokens=1&passwords_policy=x", headers=bearer(token))
    assert response.status_code == 200, response.text


# --- token lifetimes ----------------------------------------------------------------------


def test_a_token_without_exp_is_refused(
    logged_envoy: RunningEnvoy, pki: DevPki, issuer: DevIssuer, inventory: FakeInventory
) -> None:
    now = int(time.time())
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "smo-north",
        "iat": now,
        "nbf": now - 60,
        "jti": str(uuid.uuid4()),
        "roles": ["o2ims-reader"],
    }
    with rest_client(logged_envoy, pki) as http:
        forever = http.get(POOLS, headers=bearer(signed(issuer, claims)))
        # The same claims with an exp pass: only the missing exp was refused.
        bounded = http.get(POOLS, headers=bearer(signed(issuer, {**claims, "exp": now + 600})))

    assert_problem(forever, 401)
    assert bounded.status_code == 200, bounded.text


def test_a_token_living_longer_than_the_maximum_is_refused(
    *,
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    issuer: DevIssuer,
    inventory: FakeInventory,
) -> None:
    running = envoy_factory(core.port, jwt=jwt_config(issuer, max_lifetime_s=3600))
    with rest_client(running, pki) as http:
        too_long = http.get(POOLS, headers=bearer(issuer.mint("smo-north", ttl_s=7200)))
        within = http.get(POOLS, headers=bearer(issuer.mint("smo-north", ttl_s=1800)))

    assert_problem(too_long, 401)
    assert too_long.headers["www-authenticate"].startswith("Bearer ")
    assert within.status_code == 200, within.text


def test_max_lifetime_defaults_to_a_day_and_must_be_positive(issuer: DevIssuer) -> None:
    assert jwt_config(issuer).max_lifetime_s == 24 * 3600
    with pytest.raises(ValueError, match="max_lifetime_s"):
        jwt_config(issuer, max_lifetime_s=0)
