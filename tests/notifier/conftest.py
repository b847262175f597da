"""Fixtures of the notifier tests: the real redis-server (tests/conftest.py), real HTTP
receivers, notifiers in-process or as real `python -m server.notifier` subprocesses."""

from __future__ import annotations

import base64
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import serialize
from devstack.processes import ManagedProcess, free_port, wait_until
from server.notifier.app import Notifier
from server.notifier.config import NotifierConfig, RetrySchedule
from server.store import Change, InventoryStore, connect
from server.subscriptions.callbacks import CallbackPolicy
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS, Subscription, SubscriptionStore
from tests.notifier.receiver import Receiver

REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()
POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"
SERVICE_URI = "https://o2ims.example.net:8443"

DEV_ENV = {
    "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
    "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8,::1/128",
}


def make_config(redis_url: str, **overrides: Any) -> NotifierConfig:
    config = NotifierConfig(
        redis_url=redis_url,
        ops_port=0,
        webhook_secret=SECRET_KEY,
        retry=RetrySchedule(base_s=0.05, max_delay_s=0.5, deadline_s=30.0),
        request_timeout_s=5.0,
        lease_ms=1000,
        callback_policy=CallbackPolicy.development(),
        service_uri=SERVICE_URI,
    )
    return replace(config, **overrides)


@contextmanager
def running(config: NotifierConfig) -> Iterator[Notifier]:
    notifier = Notifier(config)
    notifier.start()
    try:
        yield notifier
    finally:
        notifier.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def store(redis_url: str) -> Iterator[InventoryStore]:
    client = connect(redis_url)
    yield InventoryStore(client)
    client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def subscribe(
    redis_url: str,
    callback: str,
    *,
    filter_: str = "",
    major: str = "v1",
    consumer_subscription_id: str = "",
) -> Subscription:
    client = connect(redis_url)
    try:
        return SubscriptionStore(client).create(
            INVENTORY_SUBSCRIPTIONS,
            str(uuid.uuid4()),
            callback=callback,
            filter_=filter_,
            consumer_subscription_id=consumer_subscription_id or str(uuid.uuid4()),
            api_version=major,
        )
    finally:
        client.close()


def unsubscribe(redis_url: str, subscription_id: str) -> bool:
    client = connect(redis_url)
    try:
        return SubscriptionStore(client).delete(INVENTORY_SUBSCRIPTIONS, subscription_id)
    finally:
        client.close()


def pool(pool_id: str = POOL_ID, name: str = "edge", **fields: Any) -> Change:
    return Change(
        "resource_pool",
        pool_id,
        serialize(
            domain_pb2.InventoryObject(
                resource_pool=domain_pb2.ResourcePool(resource_pool_id=pool_id, name=name, **fields)
            )
        ),
    )


def resource(resource_id: str, description: str = "server", pool_id: str = POOL_ID) -> Change:
    return Change(
        "resource",
        resource_id,
        serialize(
            domain_pb2.InventoryObject(
                resource=domain_pb2.Resource(
                    resource_id=resource_id,
                    resource_pool_id=pool_id,
                    resource_type_id="rt-1",
                    name=f"node-{resource_id[:4]}",
                    description=description,
                )
            )
        ),
    )


def deleted(kind: str, object_id: str) -> Change:
    return Change(kind, object_id, None)


class NotifierProcess:
    """`python -m server.notifier` as a real child process."""

    def __init__(self, redis_url: str, log_dir: Path, **env: str) -> None:
        self.ops_port = free_port()
        self.env = {
            "REDIS_URL": redis_url,
            "NETWEAVE_WEBHOOK_SECRET": SECRET,
            "NETWEAVE_NOTIFIER_OPS_PORT": str(self.ops_port),
            "NETWEAVE_NOTIFY_LEASE_MS": "1000",
            "NETWEAVE_NOTIFY_RETRY_BASE_S": "0.05",
            "NETWEAVE_NOTIFY_RETRY_MAX_DELAY_S": "0.5",
            "NETWEAVE_SERVICE_URI": SERVICE_URI,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen" / "python")]),
            **DEV_ENV,
            **env,
        }
        self.log_path = log_dir / f"notifier-{uuid.uuid4().hex[:6]}.log"
        self.process = ManagedProcess(
            "notifier",
            [sys.executable, "-m", "server.notifier"],
            self.log_path,
            env=self.env,
            cwd=REPO,
        )

    def start(self, timeout: float = 15.0) -> NotifierProcess:
        self.process.start()
        wait_until(self.ready, timeout, "the notifier's /readyz")
        return self

    def ready(self) -> bool:
        self.process.require_alive()
        return httpx.get(f"http://127.0.0.1:{self.ops_port}/readyz", timeout=1).status_code == 200

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=2).text

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()


def metric_value(text: str, name: str) -> float:
    """The value of one sample, `name` with its labels as Prometheus prints them."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
