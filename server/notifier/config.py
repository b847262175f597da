"""Notifier configuration: a typed dataclass, read from the environment."""

from __future__ import annotations

import base64
import binascii
import os
import random
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from netweave.env import env_float, env_int
from server.subscriptions.addresses import Endpoint, url_endpoint
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

    base_s: float = 1.0
    max_delay_s: float = 3600.0
    deadline_s: float = 86400.0
    max_attempts: int = 0

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

    redis_url: str = "redis://127.0.0.1:6379/0"
    ops_host: str = "127.0.0.1"
    ops_port: int = 8081
    # HMAC key of the webhook signatures (decoded; never logged).
    webhook_secret: bytes = field(default=b"", repr=False)
    filter_mode: FilterMode = "include"
    retry: RetrySchedule = field(default_factory=RetrySchedule)
    # Connect + response timeout of one delivery attempt.
    request_timeout_s: float = 10.0
    # How long a subscription (or the matcher role) stays with a process that stopped
    # renewing it; a killed notifier's work moves on after this.
    lease_ms: int = 5000
    dead_letter_max_len: int = 100_000
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    # Outbound TLS: CA bundle to verify callbacks with (empty: the system's), and an
    # optional client certificate for mTLS.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    oauth: OAuthClient = field(default_factory=OAuthClient)
    # O-Cloud registration (spec 3.15): POSTed here on start-up when set.
    smo_registration_url: str = ""
    service_uri: str = "https://127.0.0.1:8443"

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
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("NETWEAVE_NOTIFY_TLS_CERT and NETWEAVE_NOTIFY_TLS_KEY go together")

    @classmethod
    def from_env(cls) -> NotifierConfig:
        mode = os.environ.get("NETWEAVE_NOTIFY_FILTER_MODE", "include").strip().lower()
        config = cls(
            redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ops_host=os.environ.get("NETWEAVE_NOTIFIER_OPS_HOST", "127.0.0.1"),
            ops_port=env_int("NETWEAVE_NOTIFIER_OPS_PORT", 8081),
            webhook_secret=decode_webhook_secret(os.environ.get("NETWEAVE_WEBHOOK_SECRET", "")),
            # Anything but include/exclude is refused by __post_init__.
            filter_mode=cast(FilterMode, mode),
            retry=RetrySchedule(
                base_s=env_float("NETWEAVE_NOTIFY_RETRY_BASE_S", 1.0),
                max_delay_s=env_float("NETWEAVE_NOTIFY_RETRY_MAX_DELAY_S", 3600.0),
                deadline_s=env_float("NETWEAVE_NOTIFY_RETRY_DEADLINE_S", 86400.0),
                max_attempts=env_int("NETWEAVE_NOTIFY_MAX_ATTEMPTS", 0),
            ),
            request_timeout_s=env_float("NETWEAVE_NOTIFY_TIMEOUT_S", 10.0),
            lease_ms=env_int("NETWEAVE_NOTIFY_LEASE_MS", 5000),
            dead_letter_max_len=env_int("NETWEAVE_NOTIFY_DEAD_LETTER_MAX_LEN", 100_000),
            callback_policy=CallbackPolicy.from_env(),
            tls_ca=os.environ.get("NETWEAVE_NOTIFY_TLS_CA", ""),
            tls_cert=os.environ.get("NETWEAVE_NOTIFY_TLS_CERT", ""),
            tls_key=os.environ.get("NETWEAVE_NOTIFY_TLS_KEY", ""),
            oauth=OAuthClient(
                token_url=os.environ.get("NETWEAVE_NOTIFY_OAUTH_TOKEN_URL", ""),
                client_id=os.environ.get("NETWEAVE_NOTIFY_OAUTH_CLIENT_ID", ""),
                client_secret=os.environ.get("NETWEAVE_NOTIFY_OAUTH_CLIENT_SECRET", ""),
                scope=os.environ.get("NETWEAVE_NOTIFY_OAUTH_SCOPE", ""),
            ),
            smo_registration_url=os.environ.get("NETWEAVE_SMO_REGISTRATION_URL", ""),
            service_uri=os.environ.get("NETWEAVE_SERVICE_URI", "https://127.0.0.1:8443"),
        )
        # Callbacks never reach the notifier's own ops port or Redis.
        policy = config.callback_policy.with_gateway_endpoints(own_listeners(config))
        return replace(config, callback_policy=policy)


def own_listeners(config: NotifierConfig) -> list[Endpoint]:
    """Where the notifier listens, and the Redis it uses."""
    found = [(config.ops_host, config.ops_port)]
    redis_endpoint = url_endpoint(config.redis_url, 6379)
    if redis_endpoint is not None:
        found.append(redis_endpoint)
    return found
