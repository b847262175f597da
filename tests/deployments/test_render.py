"""`python -m rest_facade.render` (the production Envoy configuration from the environment) and
`python -m rest_facade.envoy_drain` (the Envoy container's preStop hook)."""

from __future__ import annotations

import http.server
import socketserver
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from devstack.pki import DevPki, InternalPki, ensure_dev_pki, ensure_internal_pki
from netweave import settings
from rest_facade import envoy_drain, render
from rest_facade.envoy_config import ClientLimit
from tests.deployments.manifests import REPO
from tests.test_settings import RecordingEnviron

REQUIRED_FILES = (
    "NETWEAVE_ENVOY_SERVER_CERT",
    "NETWEAVE_ENVOY_SERVER_KEY",
    "NETWEAVE_ENVOY_CLIENT_CA",
    "NETWEAVE_ENVOY_CORE_CERT",
    "NETWEAVE_ENVOY_CORE_KEY",
    "NETWEAVE_ENVOY_CORE_CA",
)


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevPki, InternalPki]:
    directory = tmp_path_factory.mktemp("pki")
    return ensure_dev_pki(directory / "dev"), ensure_internal_pki(directory / "internal")


@pytest.fixture
def environ(pkis: tuple[DevPki, InternalPki], tmp_path: Path) -> dict[str, str]:
    dev, internal = pkis
    return {
        "NETWEAVE_ENVOY_SERVER_CERT": str(dev.server_cert),
        "NETWEAVE_ENVOY_SERVER_KEY": str(dev.server_key),
        "NETWEAVE_ENVOY_CLIENT_CA": str(dev.ca_cert),
        "NETWEAVE_ENVOY_CORE_CERT": str(internal.edge.cert),
        "NETWEAVE_ENVOY_CORE_KEY": str(internal.edge.key),
        "NETWEAVE_ENVOY_CORE_CA": str(internal.ca_cert),
        "NETWEAVE_ENVOY_ADMIN_SOCKET": str(tmp_path / "admin.sock"),
    }


def run(out: Path, environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rest_facade.render", "--out", str(out)],
        env={"PATH": "/usr/bin:/bin", **environ},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_defaults_listen_on_every_address_and_demand_a_client_certificate(
    environ: dict[str, str],
) -> None:
    config = render.config_from_env(environ)
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8443)
    assert (config.stats_host, config.stats_port) == ("0.0.0.0", 9902)
    assert config.core_endpoints == (("127.0.0.1", 50052),)
    assert config.require_client_certificate is True
    assert config.core_tls is not None and config.core_tls.core_uri.endswith("/core")
    assert config.audit_log_path == Path("/dev/stdout")
    assert config.jwt is None and config.tracing is None and config.telemetry_port is None
    assert config.rate_limit is not None and config.rate_limit.max_tokens == 100
    assert (config.access_log_requests, config.access_log_slow_ms) == ("failures", 1000)


@pytest.mark.parametrize("missing", REQUIRED_FILES)
def test_a_missing_certificate_setting_exits_2_naming_it_and_writes_nothing(
    environ: dict[str, str], tmp_path: Path, missing: str
) -> None:
    del environ[missing]
    out = tmp_path / "envoy.yaml"
    result = run(out, environ)
    assert result.returncode == 2
    assert missing in result.stderr and "required" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("NETWEAVE_ENVOY_SERVER_CERT", "/nonexistent/tls.crt", "is not a file"),
        ("NETWEAVE_ENVOY_LISTEN", "8443", "must be host:port"),
        ("NETWEAVE_ENVOY_CORE_TELEMETRY_PORT", "fifty", "must be an integer"),
        ("NETWEAVE_REQUIRE_TOKEN", "1", "NETWEAVE_ENVOY_JWT_ISSUER"),
        ("NETWEAVE_ENVOY_JWT_ISSUER", "https://issuer.example", ""),
        ("NETWEAVE_AUTH_POLICY", "/nonexistent/policy.yaml", "is not a file"),
        ("NETWEAVE_ENVOY_ACCESS_LOG", "successes", "must be failures or all"),
        ("NETWEAVE_ENVOY_ACCESS_LOG_SLOW_MS", "0", "must be at least 1"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable(
    environ: dict[str, str], tmp_path: Path, name: str, value: str, says: str
) -> None:
    environ[name] = value
    result = run(tmp_path / "envoy.yaml", environ)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    named = "NETWEAVE_ENVOY_JWT_AUDIENCES" if name == "NETWEAVE_ENVOY_JWT_ISSUER" else name
    assert named in result.stderr


def test_tokens_tracing_telemetry_and_per_client_rates(
    environ: dict[str, str], pkis: tuple[DevPki, InternalPki], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    example = (REPO / "examples" / "access-policy.yaml").read_text()
    clients = "  clients: {}\n"
    assert clients in example
    policy.write_text(
        example.replace(clients, "  clients:\n    spiffe://netweave.local/client/smo-north: 5\n")
    )
    environ.update(
        {
            "NETWEAVE_ENVOY_JWT_ISSUER": "https://issuer.example",
            "NETWEAVE_ENVOY_JWT_AUDIENCES": "o2ims,o2ims-alt",
            "NETWEAVE_ENVOY_JWKS_URI": "https://issuer.example/jwks.json",
            "NETWEAVE_REQUIRE_TOKEN": "true",
            "NETWEAVE_OTLP_ENDPOINT": "collector:4317",
            "NETWEAVE_TRACE_SAMPLE_RATIO": "0.25",
            "NETWEAVE_ENVOY_CORE_TELEMETRY_PORT": "50053",
            "NETWEAVE_ENVOY_CORE_ENDPOINTS": "core-a:50052,core-b:50052",
            "NETWEAVE_AUTH_POLICY": str(policy),
            "NETWEAVE_RATE_LIMIT_RPS": "50",
            "NETWEAVE_ENVOY_AUDIT_LOG": "",
        }
    )
    config = render.config_from_env(environ)
    assert config.jwt is not None and config.jwt.required
    assert config.jwt.audiences == ("o2ims", "o2ims-alt")
    assert config.tracing is not None and config.tracing.sample_ratio == 0.25
    assert config.telemetry_port == 50053
    assert config.core_endpoints == (("core-a", 50052), ("core-b", 50052))
    assert config.audit_log_path is None
    assert config.rate_limit is not None
    assert (config.rate_limit.tokens_per_fill, config.rate_limit.fill_interval_s) == (5, 0.1)
    assert ClientLimit("spiffe://netweave.local/client/smo-north", 5, 1.0, 5) in (
        config.rate_limit.per_client
    )


def test_the_command_reads_exactly_the_settings_listed_for_it(environ: dict[str, str]) -> None:
    environ.update(
        {
            "NETWEAVE_ENVOY_JWT_ISSUER": "https://issuer.example",
            "NETWEAVE_ENVOY_JWT_AUDIENCES": "o2ims",
            "NETWEAVE_ENVOY_JWKS_URI": "https://issuer.example/jwks.json",
            "NETWEAVE_AUTH_POLICY": str(REPO / "examples" / "access-policy.yaml"),
            "NETWEAVE_OTLP_ENDPOINT": "collector:4317",
        }
    )
    recording = RecordingEnviron(environ)
    render.config_from_env(recording)
    listed = {setting.name for setting in settings.settings_of(settings.ENVOY_RENDER)}
    assert recording.asked == listed


class _AdminHandler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.requests.append(("POST", self.path))
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"OK\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def test_drain_waits_then_asks_envoy_to_drain_gracefully_then_waits_the_drain_time(
    tmp_path: Path,
) -> None:
    socket_path = tmp_path / "admin.sock"
    _AdminHandler.requests = []
    server = _UnixServer(str(socket_path), _AdminHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    slept: list[float] = []
    try:
        assert envoy_drain.drain(socket_path, 5, 8, sleep=slept.append)
    finally:
        server.shutdown()
        server.server_close()
    assert _AdminHandler.requests == [("POST", "/drain_listeners?graceful")]
    assert slept == [5, 8]


def test_drain_of_an_envoy_that_is_gone_does_not_fail_the_hook(tmp_path: Path) -> None:
    slept: list[float] = []
    assert not envoy_drain.drain(tmp_path / "none.sock", 1, 8, sleep=slept.append)
    assert slept == [1]  # no drain time to wait for
    assert (
        envoy_drain.main(
            ["--admin-socket", str(tmp_path / "none.sock"), "--delay", "0", "--drain-seconds", "0"]
        )
        == 0
    )
