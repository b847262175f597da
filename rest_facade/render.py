"""`python -m rest_facade.render`: the production Envoy configuration of one deployment, from
its environment (netweave/settings.py, "the edge, as `python -m rest_facade.render`
configures it"; README's configuration table lists every variable).

    python -m rest_facade.render --out /etc/envoy/envoy.yaml [--validate]

The gateway pod runs it in an init container of the same image, writing into an emptyDir the
Envoy container reads (deployments/kubernetes/base/gateway.yaml). It fails closed: a required
variable that is unset, a value that does not parse, or a certificate file that is not there
exits 2 with the variable's name on stderr, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from netweave import settings
from netweave.env import Setting
from rest_facade.envoy_config import (
    ClientLimit,
    CoreTls,
    EnvoyConfig,
    JwtConfig,
    RateLimitConfig,
    write,
)
from rest_facade.envoy_tracing import EdgeTracing
from server.auth.policy import AccessPolicy

OK, INVALID, BAD_SETTING = 0, 1, 2


class SettingError(ValueError):
    """A variable is missing or wrong; the message names it."""


def rate_limit(rps: int, burst: int, client_rates: Mapping[str, int]) -> RateLimitConfig:
    """The edge's buckets: `rps` per client (burst `burst`, 0: one second's worth), and the
    access policy's per-client rates. Refilled every 100 ms from 10 requests/s on, so a
    client's admitted rate is smooth."""
    tokens, interval, size = _bucket(rps, burst)
    return RateLimitConfig(
        tokens_per_fill=tokens,
        fill_interval_s=interval,
        max_tokens=size,
        per_client=tuple(
            ClientLimit(identity, *_bucket(rate, 0))
            for identity, rate in sorted(client_rates.items())
        ),
    )


def _bucket(rps: int, burst: int) -> tuple[int, float, int]:
    """(tokens per fill, fill interval, bucket size) admitting `rps` requests per second."""
    if rps >= 10:
        return rps // 10, 0.1, burst or rps
    return rps, 1.0, burst or rps


@dataclass(frozen=True)
class _Reader:
    environ: Mapping[str, str] | None

    def required_file(self, setting: Setting[str]) -> Path:
        value = setting.read(self.environ)
        if not value:
            what = setting.meaning.removeprefix("required: ")
            raise SettingError(f"{setting.name} is required ({what}) and not set")
        path = Path(value)
        if not path.is_file():
            raise SettingError(f"{setting.name}: {path} is not a file")
        return path

    def host_port(self, setting: Setting[str]) -> tuple[str, int]:
        return _host_port(setting.name, setting.read(self.environ))


def _host_port(name: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingError(f"{name} must be host:port, got {text!r}")
    return host, int(port)


def config_from_env(environ: Mapping[str, str] | None = None) -> EnvoyConfig:
    """The EnvoyConfig the environment describes; SettingError (naming the variable) if a
    required one is missing or a value is wrong."""
    read = _Reader(environ)
    try:
        return _config(read, environ)
    except SettingError:
        raise
    except ValueError as exc:  # a Setting that did not parse names itself
        raise SettingError(str(exc)) from exc


def _config(read: _Reader, environ: Mapping[str, str] | None) -> EnvoyConfig:
    listen_host, listen_port = read.host_port(settings.ENVOY_LISTEN)
    stats_host, stats_port = read.host_port(settings.ENVOY_STATS_LISTEN)
    cores = [
        _host_port(settings.ENVOY_CORE_ENDPOINTS.name, raw)
        for raw in settings.ENVOY_CORE_ENDPOINTS.read(environ)
    ]
    if not cores:
        raise SettingError(f"{settings.ENVOY_CORE_ENDPOINTS.name} names no core")
    core_host, core_port = cores[0]
    telemetry_port = settings.ENVOY_CORE_TELEMETRY_PORT.read(environ)
    descriptor = settings.ENVOY_DESCRIPTOR.read(environ)
    if not descriptor.is_file():
        raise SettingError(f"{settings.ENVOY_DESCRIPTOR.name}: {descriptor} is not a file")
    audit_log = settings.ENVOY_AUDIT_LOG.read(environ)
    otlp_endpoint = settings.OTLP_ENDPOINT.read(environ)
    return EnvoyConfig(
        listen_host=listen_host,
        listen_port=listen_port,
        core_host=core_host,
        core_port=core_port,
        core_endpoints=tuple(cores),
        core_health_interval_s=settings.ENVOY_CORE_HEALTH_INTERVAL.read(environ),
        descriptor_path=descriptor,
        server_cert=read.required_file(settings.ENVOY_SERVER_CERT),
        server_key=read.required_file(settings.ENVOY_SERVER_KEY),
        client_ca=read.required_file(settings.ENVOY_CLIENT_CA),
        require_client_certificate=settings.REQUIRE_CLIENT_CERT.read(environ),
        client_san_allow_list=settings.ENVOY_CLIENT_SAN_PREFIXES.read(environ),
        core_tls=CoreTls(
            cert=read.required_file(settings.ENVOY_CORE_CERT),
            key=read.required_file(settings.ENVOY_CORE_KEY),
            ca=read.required_file(settings.ENVOY_CORE_CA),
            core_uri=settings.ENVOY_CORE_URI.read(environ),
        ),
        admin_socket=settings.ENVOY_ADMIN_SOCKET.read(environ),
        jwt=_jwt(read, environ),
        rate_limit=rate_limit(
            settings.RATE_LIMIT_RPS.read(environ),
            settings.RATE_LIMIT_BURST.read(environ),
            _client_rates(read, environ),
        ),
        strict_query_parameters=settings.STRICT_QUERY_PARAMETERS.read(environ),
        access_log_requests=settings.ENVOY_ACCESS_LOG.read(environ),
        access_log_slow_ms=settings.ENVOY_ACCESS_LOG_SLOW_MS.read(environ),
        audit_log_path=Path(audit_log) if audit_log else None,
        telemetry_port=telemetry_port or None,
        stats_host=stats_host,
        stats_port=stats_port,
        tracing=EdgeTracing(otlp_endpoint, settings.TRACE_SAMPLE_RATIO.read(environ))
        if otlp_endpoint
        else None,
    )


def _jwt(read: _Reader, environ: Mapping[str, str] | None) -> JwtConfig | None:
    issuer = settings.ENVOY_JWT_ISSUER.read(environ)
    if not issuer:
        if settings.REQUIRE_TOKEN.read(environ):
            raise SettingError(
                f"{settings.REQUIRE_TOKEN.name} is set but {settings.ENVOY_JWT_ISSUER.name} is "
                "not: tokens cannot be required without an issuer to check them against"
            )
        return None
    audiences = settings.ENVOY_JWT_AUDIENCES.read(environ)
    if not audiences:
        raise SettingError(f"{settings.ENVOY_JWT_AUDIENCES.name} is required with an issuer")
    jwks_path = settings.ENVOY_JWKS_PATH.read(environ)
    jwks_uri = settings.ENVOY_JWKS_URI.read(environ)
    if bool(jwks_path) == bool(jwks_uri):
        raise SettingError(
            f"set exactly one of {settings.ENVOY_JWKS_PATH.name} or "
            f"{settings.ENVOY_JWKS_URI.name} with an issuer"
        )
    return JwtConfig(
        issuer=issuer,
        audiences=audiences,
        jwks_path=read.required_file(settings.ENVOY_JWKS_PATH) if jwks_path else None,
        jwks_uri=jwks_uri or None,
        required=settings.REQUIRE_TOKEN.read(environ),
    )


def _client_rates(read: _Reader, environ: Mapping[str, str] | None) -> dict[str, int]:
    if not settings.ENVOY_AUTH_POLICY.read(environ):
        return {}
    path = read.required_file(settings.ENVOY_AUTH_POLICY)
    try:
        return AccessPolicy.load(path).client_rates()
    except (OSError, ValueError) as exc:
        raise SettingError(f"{settings.ENVOY_AUTH_POLICY.name}: {path}: {exc}") from exc


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rest_facade.render", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="where to write envoy.yaml")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="check the written file with `envoy --mode validate` (exit 1 if refused)",
    )
    args = parser.parse_args(argv)
    try:
        config = config_from_env(environ)
    except SettingError as exc:
        print(f"rest_facade.render: {exc}", file=sys.stderr)
        return BAD_SETTING
    try:
        write(config, args.out)
    except OSError as exc:
        print(
            f"rest_facade.render: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr
        )
        return BAD_SETTING
    if args.validate:
        # Imported here: it brings the process supervision code only this option needs.
        from rest_facade.envoy_process import EnvoyError, validate

        try:
            validate(args.out)
        except EnvoyError as exc:
            print(f"rest_facade.render: {exc}", file=sys.stderr)
            return INVALID
    print(f"wrote {args.out}")
    return OK


if __name__ == "__main__":
    sys.exit(main())
