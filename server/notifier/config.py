"""Notifier configuration: a typed dataclass, read from the environment through the
definitions in netweave/settings.py (NOTIFIER_SETTINGS)."""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from netweave import settings
from netweave.redis_url import redis_endpoints
from netweave.tracing import TracingConfig
from server.subscriptions.addresses import Endpoint, parse_endpoint
from server.subscriptions.callbacks import CallbackPolicy

FilterMode = Literal["include", "exclude"]


def decode_webhook_secret(text: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: "whsec_" + base64 is decoded (the
    convention's own form), anything else is used as given (its UTF-8 bytes)."""
    if text.startswith("whsec_"):
        try:
            return base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("NETWEAVE_WEBHOOK_SECRET: whsec_ secret is not base64") from exc
    return text.encode()


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with full jitter: attempt n (1-based) waits a uniform random
    time in [0, min(max_delay, base * 2**(n-1))], at least what a Retry-After asked
    (capped at max_delay). A notification still failing `deadline_s` after its first
    failed attempt, or after `max_attempts` attempts (0: no limit), is dead-lettered."""

    base_s: float = settings.NOTIFY_RETRY_BASE_S.default
    max_delay_s: float = settings.NOTIFY_RETRY_MAX_DELAY_S.default
    deadline_s: float = settings.NOTIFY_RETRY_DEADLINE_S.default
    max_attempts: int = settings.NOTIFY_MAX_ATTEMPTS.default

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds before attempt `attempt + 1`, after `attempt` failures."""
        ceiling = min(self.max_delay_s, self.base_s * (2 ** min(attempt - 1, 62)))
        delay = random.uniform(0.0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


@dataclass(frozen=True)
class OAuthClient:
    """OAuth2 client credentials for outbound calls (empty token_url: none)."""

    token_url: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    scope: str = ""


@dataclass(frozen=True)
class NotifierConfig:
    """Everything the notifier needs to start. Port 0 picks a free port."""

    redis_url: str = settings.REDIS_URL.default
    ops_host: str = settings.NOTIFIER_OPS_HOST.default
    ops_port: int = settings.NOTIFIER_OPS_PORT.default
    # HMAC key of the webhook signatures (decoded; never logged).
    webhook_secret: bytes = field(default=b"", repr=False)
    filter_mode: FilterMode = "include"
    retry: RetrySchedule = field(default_factory=RetrySchedule)
    # Connect + response timeout of one delivery attempt.
    request_timeout_s: float = settings.NOTIFY_TIMEOUT_S.default
    # How long a subscription (or the matcher role) stays with a process that stopped
    # renewing it; a killed notifier's work moves on after this.
    lease_ms: int = settings.NOTIFY_LEASE_MS.default
    # Threads delivering (server/notifier/delivery.py DeliveryPool): how many subscribers
    # can be waited on at once, whatever the number of subscriptions.
    delivery_workers: int = settings.NOTIFY_WORKERS.default
    dead_letter_max_len: int = settings.NOTIFY_DEAD_LETTER_MAX_LEN.default
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    # Outbound TLS: CA bundle to verify callbacks with (empty: the system's), and an
    # optional client certificate for mTLS.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # How often, at most, the files above are checked for a renewal (server/notifier/http.py).
    tls_check_s: float = settings.NOTIFY_TLS_CHECK_S.default
    oauth: OAuthClient = field(default_factory=OAuthClient)
    # O-Cloud registration (spec 3.15): POSTed here on start-up when set.
    smo_registration_url: str = ""
    service_uri: str = settings.SERVICE_URI.default
    # OpenTelemetry traces (netweave/tracing.py); the default: off.
    tracing: TracingConfig = field(default_factory=TracingConfig)

    def __post_init__(self) -> None:
        if not self.webhook_secret:
            raise ValueError(
                "NETWEAVE_WEBHOOK_SECRET is required: every notification is signed "
                "(Standard Webhooks; e.g. whsec_ + base64 of 32 random bytes)"
            )
        if self.filter_mode not in ("include", "exclude"):
            raise ValueError(
                f"NETWEAVE_NOTIFY_FILTER_MODE must be include or exclude, got {self.filter_mode!r}"
            )
        if self.delivery_workers < 1:
            raise ValueError(
                f"NETWEAVE_NOTIFY_WORKERS must be at least 1, got {self.delivery_workers}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("NETWEAVE_NOTIFY_TLS_CERT and NETWEAVE_NOTIFY_TLS_KEY go together")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotifierConfig:
        """The notifier's configuration from `environ` (default: the process environment)."""
        config = cls(
            redis_url=settings.REDIS_URL.read(environ),
            ops_host=settings.NOTIFIER_OPS_HOST.read(environ),
            ops_port=settings.NOTIFIER_OPS_PORT.read(environ),
            webhook_secret=settings.WEBHOOK_SECRET.read_as(decode_webhook_secret, environ),
            # The setting admits include or exclude only.
            filter_mode=cast(FilterMode, settings.NOTIFY_FILTER_MODE.read(environ)),
            retry=RetrySchedule(
                base_s=settings.NOTIFY_RETRY_BASE_S.read(environ),
                max_delay_s=settings.NOTIFY_RETRY_MAX_DELAY_S.read(environ),
                deadline_s=settings.NOTIFY_RETRY_DEADLINE_S.read(environ),
                max_attempts=settings.NOTIFY_MAX_ATTEMPTS.read(environ),
            ),
            request_timeout_s=settings.NOTIFY_TIMEOUT_S.read(environ),
            lease_ms=settings.NOTIFY_LEASE_MS.read(environ),
            delivery_workers=settings.NOTIFY_WORKERS.read(environ),
            dead_letter_max_len=settings.NOTIFY_DEAD_LETTER_MAX_LEN.read(environ),
            callback_policy=CallbackPolicy.from_env(environ),
            tls_ca=settings.NOTIFY_TLS_CA.read(environ),
            tls_cert=settings.NOTIFY_TLS_CERT.read(environ),
            tls_key=settings.NOTIFY_TLS_KEY.read(environ),
            tls_check_s=settings.NOTIFY_TLS_CHECK_S.read(environ),
            oauth=OAuthClient(
                token_url=settings.NOTIFY_OAUTH_TOKEN_URL.read(environ),
                client_id=settings.NOTIFY_OAUTH_CLIENT_ID.read(environ),
                client_secret=settings.NOTIFY_OAUTH_CLIENT_SECRET.read(environ),
                scope=settings.NOTIFY_OAUTH_SCOPE.read(environ),
            ),
            smo_registration_url=settings.SMO_REGISTRATION_URL.read(environ),
            service_uri=settings.SERVICE_URI.read(environ),
            tracing=TracingConfig(
                settings.OTLP_ENDPOINT.read(environ), settings.TRACE_SAMPLE_RATIO.read(environ)
            ),
        )
        # Callbacks never reach the notifier's own ops port, Redis or the trace collector.
        policy = config.callback_policy.with_gateway_endpoints(own_listeners(config))
        return replace(config, callback_policy=policy)


def own_listeners(config: NotifierConfig) -> list[Endpoint]:
    """Where the notifier listens, and the Redis and trace collector it uses."""
    found = [(config.ops_host, config.ops_port)]
    found.extend(redis_endpoints(config.redis_url))  # the sentinels too
    if config.tracing.endpoint:
        found.append(parse_endpoint(config.tracing.endpoint))
    return found
