"""A bare gRPC server for tests that register the core's servicers themselves: it carries the
core's own access control (the auth interceptor on an internal listener) with the open
development policy, so every caller is an administrator, as on the core without a policy.
Servicers read their caller from that interceptor; without it they would serve nobody."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from netweave.grpc_server import new_server
from server.alarms.view import AlarmView
from server.auth import AccessPolicy, AuthInterceptor
from server.auth.identity import Channel
from server.metrics import GatewayMetrics
from server.store import connect


def open_access_server(max_workers: int) -> grpc.Server:
    auth = AuthInterceptor(AccessPolicy.open_policy(), None, GatewayMetrics(), Channel.INTERNAL)
    return new_server(max_workers, [auth])


@contextmanager
def running_alarm_view(redis_url: str) -> Iterator[AlarmView]:
    """The alarm view a core's MonitoringV1Servicer lists from, loaded and following."""
    stop = threading.Event()
    view = AlarmView(connect(redis_url, socket_timeout=5.0), stop, read_block_ms=50)
    view.load()
    view.start()
    try:
        yield view
    finally:
        stop.set()
        view.join(5)
