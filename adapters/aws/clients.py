"""boto3 sessions and clients for the AWS adapter: the standard credential chain
(environment incl. AWS_ENDPOINT_URL, profile, instance/IRSA role), optionally through an
assumed role (refreshed before it expires), adaptive retries on every client, and a count
of every API call and HTTP request (metrics, the bench) and the time each call took."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import boto3  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.credentials import (  # type: ignore[import-untyped]
    AssumeRoleCredentialFetcher,
    DeferredRefreshableCredentials,
)

ROLE_SESSION_NAME: Final = "netweave-aws-adapter"
# Where before-call leaves the call's start in botocore's per-call context.
_STARTED: Final = "netweave_started"
DEFAULT_MAX_ATTEMPTS: Final = 5
# Per call: a region that does not answer fails its poll in bounded time.
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 30.0


def client_config(
    max_attempts: int = DEFAULT_MAX_ATTEMPTS, read_timeout: float = READ_TIMEOUT
) -> Config:
    """Adaptive retries: botocore's client-side rate limiter slows the client down when
    AWS answers RequestLimitExceeded/Throttling, and retries with backoff."""
    return Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        user_agent_extra="netweave-aws-adapter",
    )


def new_session(role_arn: str = "") -> boto3.Session:
    """A session on the standard chain, or on `role_arn` assumed from it."""
    if not role_arn:
        return boto3.Session()
    source = botocore.session.Session()
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=source.create_client,
        source_credentials=source.get_credentials(),
        role_arn=role_arn,
        extra_args={"RoleSessionName": ROLE_SESSION_NAME},
    )
    assumed = botocore.session.Session()
    assumed._credentials = DeferredRefreshableCredentials(  # botocore's own pattern
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )
    return boto3.Session(botocore_session=assumed)


@dataclass
class CallCounter:
    """API calls (operations) and HTTP requests, by (region, service[, operation])."""

    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_call: Callable[[str, str, str], None] | None = None
    on_request: Callable[[str, str], None] | None = None
    # Seconds one API call took, retries and their waits included (succeeded or not).
    on_duration: Callable[[float], None] | None = None

    def attach(self, client: Any, region: str) -> None:
        service = str(client.meta.service_model.service_name)

        def before_call(model: Any, context: Any = None, **_: Any) -> None:
            if context is not None:
                context[_STARTED] = time.perf_counter()
            with self._lock:
                self.calls[region, service, model.name] += 1
            if self.on_call is not None:
                self.on_call(region, service, model.name)

        def after_call(context: Any = None, **_: Any) -> None:
            started = context.get(_STARTED) if context is not None else None
            if started is not None and self.on_duration is not None:
                self.on_duration(time.perf_counter() - started)

        def before_send(**_: Any) -> None:
            with self._lock:
                self.requests[region, service] += 1
            if self.on_request is not None:
                self.on_request(region, service)

        client.meta.events.register("before-call", before_call)
        client.meta.events.register("before-send", before_send)
        # after-call: an answer (after any retries); after-call-error: no answer at all.
        client.meta.events.register("after-call", after_call)
        client.meta.events.register("after-call-error", after_call)

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())


@dataclass(frozen=True)
class RegionClients:
    region: str
    ec2: Any
    eks: Any
    cloudwatch: Any


def region_clients(
    session: boto3.Session,
    region: str,
    counter: CallCounter,
    max_attempts: int,
    read_timeout: float = READ_TIMEOUT,
) -> RegionClients:
    config = client_config(max_attempts, read_timeout)
    made = {
        service: session.client(service, region_name=region, config=config)
        for service in ("ec2", "eks", "cloudwatch")
    }
    for client in made.values():
        counter.attach(client, region)
    return RegionClients(region, made["ec2"], made["eks"], made["cloudwatch"])


def account_of(
    session: boto3.Session, region: str, max_attempts: int, counter: CallCounter | None = None
) -> str:
    """The account the credentials act in (one STS call)."""
    sts = session.client("sts", region_name=region, config=client_config(max_attempts))
    if counter is not None:
        counter.attach(sts, region)
    return str(sts.get_caller_identity()["Account"])
