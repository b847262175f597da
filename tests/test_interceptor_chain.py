"""netweave.grpc_server.InterceptorChain: a server's interceptors run as one, a unary
method's composed handler built once when every interceptor allows it, per call otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from netweave.grpc_server import new_server

UNARY = "/test.Chain/Unary"
STREAM = "/test.Chain/Stream"


class Recording(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts its intercept_service calls by method and tags the answer with its name, so
    the order of the chain shows in the reply."""

    def __init__(self, name: str, *, by_method: bool, log: list[str]) -> None:
        self.name = name
        self.unary_by_method = by_method
        self.seen: dict[str, int] = {}
        self._log = log

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        self.seen[details.method] = self.seen.get(details.method, 0) + 1
        self._log.append(self.name)
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Callable[[bytes, Any], bytes] = handler.unary_unary
        name = self.name

        def tagged(request: bytes, context: Any) -> bytes:
            return name.encode() + b">" + inner(request, context)

        return grpc.unary_unary_rpc_method_handler(tagged)


def _unary(request: bytes, context: Any) -> bytes:
    return b"handler:" + request


def _stream(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"one"
    yield b"two"


@pytest.fixture
def serve() -> Iterator[Callable[[list[Recording]], grpc.Channel]]:
    servers: list[grpc.Server] = []
    channels: list[grpc.Channel] = []

    def start(interceptors: list[Recording]) -> grpc.Channel:
        server = new_server(2, interceptors)
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "test.Chain",
                    {
                        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
                    },
                )
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(grace=None)


def test_a_unary_method_is_composed_once_in_the_order_given(
    serve: Callable[[list[Recording]], grpc.Channel],
) -> None:
    log: list[str] = []
    outer = Recording("outer", by_method=True, log=log)
    inner = Recording("inner", by_method=True, log=log)
    call = serve([outer, inner]).unary_unary(UNARY)
    answers = [call(f"r{index}".encode(), timeout=5) for index in range(5)]
    assert answers == [f"outer>inner>handler:r{index}".encode() for index in range(5)]
    # Built on the first call; the four after it were served from the chain's table.
    assert outer.seen == {UNARY: 1} and inner.seen == {UNARY: 1}
    assert log == ["outer", "inner"]


def test_streaming_calls_go_through_every_interceptor_each_time(
    serve: Callable[[list[Recording]], grpc.Channel],
) -> None:
    log: list[str] = []
    first = Recording("first", by_method=True, log=log)
    call = serve([first]).unary_stream(STREAM)
    for _ in range(3):
        assert list(call(b"", timeout=5)) == [b"one", b"two"]
    assert first.seen == {STREAM: 3}


def test_one_interceptor_deciding_per_call_makes_every_call_go_through_the_chain(
    serve: Callable[[list[Recording]], grpc.Channel],
) -> None:
    log: list[str] = []
    cached = Recording("cached", by_method=True, log=log)
    per_call = Recording("per-call", by_method=False, log=log)
    call = serve([cached, per_call]).unary_unary(UNARY)
    for index in range(4):
        assert call(b"x", timeout=5) == b"cached>per-call>handler:x", index
    assert cached.seen == {UNARY: 4} and per_call.seen == {UNARY: 4}
    assert log == ["cached", "per-call"] * 4
