"""Outbound webhook POSTs: signed, over kept-alive connections to policy-checked addresses,
with an optional client certificate and OAuth2 client-credentials token.

What cannot succeed by trying again is reported as what it is, with its own outcome: a
redirect (never followed: the policy checked this URL, not the one it points to), a
certificate that does not verify against the callback CA bundle, an address the policy
refuses. Those are dead-lettered at once; connection errors, 5xx, 408, 425 and 429 retry.

Each DeliveryWorker owns one WebhookClient (no locking on the hot path); a client keeps one
connection per callback origin and reuses it until it fails or grows old, when a new one is
opened after resolving and checking the host again (the SSRF check at delivery time).
The exchange on a connection is http1.py's.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from netweave.tls_files import Reloading
from server.notifier import signing
from server.notifier.config import NotifierConfig, OAuthClient
from server.notifier.http1 import Answer, KeptAliveConnection
from server.notifier.metrics import FinalOutcome
from server.subscriptions.callbacks import (
    USER_AGENT,
    CallbackPolicy,
    CallbackRefused,
    callback_tls_context,
    certificate_problem,
    open_connection,
    redirect_problem,
    request_target,
)

# A kept-alive connection is replaced after this long, so DNS changes are picked up and
# the address is checked against the policy again.
MAX_CONNECTION_AGE_S: Final = 60.0
# Response bodies are read (to keep the connection reusable) up to this size.
MAX_RESPONSE_BYTES: Final = 64 * 1024
# Statuses worth retrying; every other 4xx is the subscriber saying "never".
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt came to."""

    ok: bool
    # True: retrying cannot help (4xx, redirect, refused by policy, untrusted certificate).
    permanent: bool
    reason: str
    status: int | None = None
    retry_after_s: float | None = None
    # What o2ims_webhook_delivery_total counts if this attempt ends the notification.
    outcome: FinalOutcome = "dead_lettered"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def callback_ca_bundle(config: NotifierConfig) -> str:
    """The CA bundle callbacks are verified against: NETWEAVE_CALLBACK_CA_BUNDLE (core and
    notifier), or NETWEAVE_NOTIFY_TLS_CA, the notifier's older name for the same, when only
    that is set; empty: the system trust store. Raises ValueError when both are set to
    different files (which one was meant?)."""
    bundle, older = config.callback_policy.ca_bundle, config.tls_ca
    if bundle and older and os.path.realpath(bundle) != os.path.realpath(older):
        raise ValueError(
            f"NETWEAVE_CALLBACK_CA_BUNDLE ({bundle!r}) and NETWEAVE_NOTIFY_TLS_CA ({older!r}) "
            "name different CA bundles: set only NETWEAVE_CALLBACK_CA_BUNDLE"
        )
    return bundle or older


def tls_context(config: NotifierConfig) -> ssl.SSLContext:
    """Verifies callbacks against `callback_ca_bundle`; presents the client certificate."""
    context = callback_tls_context(callback_ca_bundle(config))
    if config.tls_cert:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def reloading_tls_context(config: NotifierConfig) -> Reloading[ssl.SSLContext]:
    """`tls_context`, built again when the client certificate, its key or the CA bundle
    change (a renewal), checked at most every `config.tls_check_s`: connections opened
    from then on use the new one. A renewal that does not load (a key that does not match)
    keeps the previous context (netweave/tls_files.py)."""
    files = [config.tls_cert, config.tls_key, callback_ca_bundle(config)]
    return Reloading(
        "webhook_client",
        [path for path in files if path],
        lambda: tls_context(config),
        min_interval_s=config.tls_check_s,
    )


class TokenError(Exception):
    """The OAuth2 token endpoint did not give a token."""


class TokenSource:
    """OAuth2 client-credentials tokens, cached until shortly before they expire; shared
    by every worker of the process. The token and the client secret are never logged."""

    def __init__(self, client: OAuthClient, timeout_s: float = 10.0) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._client.token_url)

    def token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            self._token, lifetime = self._fetch()
            # Renew a little early, so a token never expires on its way to the subscriber.
            self._expires = time.monotonic() + max(0.0, lifetime - 30.0)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = ""

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._client.scope:
            form["scope"] = self._client.scope
        basic = base64.b64encode(
            f"{urllib.parse.quote(self._client.client_id)}:"
            f"{urllib.parse.quote(self._client.client_secret)}".encode()
        ).decode()
        request = urllib.request.Request(
            self._client.token_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Basic {basic}",
                "Accept": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                answer = json.loads(response.read(MAX_RESPONSE_BYTES))
        except (OSError, ValueError) as exc:
            raise TokenError(f"token endpoint failed: {type(exc).__name__}") from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError("token endpoint answered without an access_token")
        lifetime = answer.get("expires_in", 300)
        return token, float(lifetime) if isinstance(lifetime, int | float) else 300.0


class WebhookClient:
    """Signs and POSTs notifications; one per worker thread."""

    def __init__(
        self,
        secret: bytes,
        policy: CallbackPolicy,
        *,
        timeout_s: float,
        tls: ssl.SSLContext | Reloading[ssl.SSLContext] | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self._secret = secret
        self._policy = policy
        self._timeout_s = timeout_s
        self._tls = tls
        self._tokens = tokens
        self._connections: dict[tuple[str, str, int | None], KeptAliveConnection] = {}
        # The TLS context each kept connection was opened with: after a certificate
        # renewal, the next POST opens a new connection (a POST under way finishes).
        self._opened_with: dict[tuple[str, str, int | None], ssl.SSLContext | None] = {}
        # The callback URL is the same for every POST of a worker: parsed once.
        self._origins: dict[str, tuple[str, str, int | None]] = {}
        self._targets: dict[str, str] = {}

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def post(
        self,
        url: str,
        message_id: str,
        body: bytes,
        correlation_id: str = "",
        traceparent: str = "",
    ) -> DeliveryResult:
        """One signed attempt, carrying `correlation_id` as X-Correlation-ID (default: the
        message id) and `traceparent` when given (the delivery's span; none when tracing is
        off). Never raises for network or HTTP failures."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Correlation-ID": correlation_id or message_id,
            **signing.headers(self._secret, message_id, int(time.time()), body),
        }
        if traceparent:
            headers["traceparent"] = traceparent
        if self._tokens is not None and self._tokens.enabled:
            try:
                headers["Authorization"] = f"Bearer {self._tokens.token()}"
            except TokenError as exc:
                return DeliveryResult(ok=False, permanent=False, reason=str(exc))
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _origin(url)
        try:
            answer = self._send(origin, url, headers, body)
        except CallbackRefused as refused:
            return DeliveryResult(
                ok=False,
                permanent=True,
                outcome="refused",
                reason=f"refused by the callback policy: {refused}",
            )
        except ssl.SSLCertVerificationError as exc:
            # Retrying cannot make the certificate trusted: fix the trust, then replay.
            self._drop(origin)
            return DeliveryResult(
                ok=False,
                permanent=True,
                outcome="tls_error",
                reason=certificate_problem(exc, self._policy.ca_bundle),
            )
        except (OSError, http.client.HTTPException) as exc:
            self._drop(origin)
            return DeliveryResult(
                ok=False, permanent=False, reason=f"{type(exc).__name__}: {exc}"[:300]
            )
        status = answer.status
        if 200 <= status < 300:
            return DeliveryResult(ok=True, permanent=False, reason="", status=status)
        if 300 <= status < 400:
            return DeliveryResult(
                ok=False,
                permanent=True,
                outcome="redirected",
                reason="the callback " + redirect_problem(status, answer.location),
                status=status,
            )
        retry_after_s = parse_retry_after(answer.retry_after, time.time())
        if status == 401 and self._tokens is not None and self._tokens.enabled:
            # Perhaps a revoked token: fetch a new one for the next attempt.
            self._tokens.invalidate()
            return DeliveryResult(ok=False, permanent=False, reason="HTTP 401", status=status)
        transient = status >= 500 or status in RETRYABLE_STATUSES
        return DeliveryResult(
            ok=False,
            permanent=not transient,
            reason=f"HTTP {status}",
            status=status,
            retry_after_s=retry_after_s,
        )

    def _send(
        self, origin: tuple[str, str, int | None], url: str, headers: dict[str, str], body: bytes
    ) -> Answer:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = request_target(url)
        for fresh in (False, True):
            connection, reused = self._connection(origin, url, fresh)
            try:
                answer = connection.post(target, headers, body, MAX_RESPONSE_BYTES)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(origin)
                if reused and not fresh:
                    continue  # the server closed an idle kept-alive connection: reconnect
                raise
            if not answer.reusable:
                self._drop(origin)
            return answer
        raise http.client.HTTPException("unreachable")  # pragma: no cover

    def _connection(
        self, origin: tuple[str, str, int | None], url: str, fresh: bool
    ) -> tuple[KeptAliveConnection, bool]:
        tls = self._tls.current() if isinstance(self._tls, Reloading) else self._tls
        found = self._connections.get(origin)
        if found is not None and not fresh:
            young = time.monotonic() - found.opened < MAX_CONNECTION_AGE_S
            if young and self._opened_with.get(origin) is tls:
                return found, True
            self._drop(origin)
        # Resolved and checked against the policy again, then connected to exactly the
        # checked address (the SSRF check at connection time).
        connection = KeptAliveConnection(
            open_connection(url, self._policy, timeout=self._timeout_s, tls=tls)
        )
        self._connections[origin] = connection
        self._opened_with[origin] = tls
        return connection, False

    def _drop(self, origin: tuple[str, str, int | None]) -> None:
        found = self._connections.pop(origin, None)
        if found is not None:
            found.close()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
