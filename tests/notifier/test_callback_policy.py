"""Callback safety at creation (checklist S8) and filters parsed at creation, through the
real gRPC servicer on a real gRPC server and Redis: the production policy refuses plain
http and every non-public address (after DNS resolution) with a precise reason; the
development policy allows loopback receivers; the optional probe GETs the callback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc

from server.listing import Lister, ListingSettings
from server.store import connect
from server.subscriptions import InventorySubscriptionServicer, SubscriptionStore
from server.subscriptions.callbacks import CallbackPolicy, parse_cidrs
from tests.core_server import open_access_server
from tests.notifier.receiver import Answer, Receiver


@contextmanager
def subscriptions(
    redis_url: str, policy: CallbackPolicy
) -> Iterator[sub_grpc.SubscriptionServiceStub]:
    server = open_access_server(max_workers=4)
    client = connect(redis_url)
    sub_grpc.add_SubscriptionServiceServicer_to_server(
        InventorySubscriptionServicer(
            SubscriptionStore(client),
            "https://o2ims.example.net",
            400,
            Lister(ListingSettings(secret=b"s")),
            callback_policy=policy,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield sub_grpc.SubscriptionServiceStub(channel)
    finally:
        channel.close()
        server.stop(None).wait()
        client.close()


def create(stub: sub_grpc.SubscriptionServiceStub, callback: str, filter_: str = "") -> str:
    return str(
        stub.CreateSubscription(
            sub.CreateSubscriptionRequest(
                api_version="v1",
                subscription=sub.InventorySubscriptionInfo(callback=callback, filter=filter_),
            )
        ).subscription_id
    )


def refusal(stub: sub_grpc.SubscriptionServiceStub, callback: str, filter_: str = "") -> str:
    with pytest.raises(grpc.RpcError) as raised:
        create(stub, callback, filter_)
    error: grpc.RpcError = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # REST 400
    return str(error.details())


@pytest.mark.parametrize(
    ("callback", "reason"),
    [
        ("https://127.0.0.1/notify", "host '127.0.0.1' resolves to 127.0.0.1, a loopback address"),
        ("https://[::1]:8443/notify", "host '::1' resolves to ::1, a loopback address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "host '169.254.169.254' resolves to 169.254.169.254, a link-local address",
        ),
        ("https://10.1.2.3/notify", "host '10.1.2.3' resolves to 10.1.2.3, a private address"),
        ("https://100.64.0.1/notify", "resolves to 100.64.0.1, a private address"),
        ("https://0.0.0.0/notify", "resolves to 0.0.0.0, a"),
        ("https://[::ffff:127.0.0.1]/x", "resolves to 127.0.0.1, a loopback address"),
        ("https://localhost:9443/notify", "host 'localhost' resolves to 127.0.0.1, a loopback"),
        ("http://smo.example.net/notify", "must use https"),
    ],
)
def test_production_policy_refuses_with_a_precise_reason(
    redis_url: str, callback: str, reason: str
) -> None:
    with subscriptions(redis_url, CallbackPolicy()) as stub:
        assert reason in refusal(stub, callback)


def test_production_policy_accepts_public_and_not_yet_resolvable_hosts(redis_url: str) -> None:
    with subscriptions(redis_url, CallbackPolicy()) as stub:
        assert create(stub, "https://93.184.216.34/notify")
        # No DNS answer now: accepted, and checked again at every delivery.
        assert create(stub, "https://smo.example.net/notify")


def test_development_policy_allows_loopback_http(redis_url: str) -> None:
    with subscriptions(redis_url, CallbackPolicy.development()) as stub:
        assert create(stub, "http://127.0.0.1:9999/notify")
        assert create(stub, "http://localhost:9999/notify")
        # Allowing loopback allows nothing else.
        assert "link-local" in refusal(stub, "http://169.254.169.254/")
        assert "private" in refusal(stub, "http://192.168.1.10/")


def test_private_ranges_and_cidr_allow_lists(redis_url: str) -> None:
    policy = CallbackPolicy(allow_private=True, allowed_networks=parse_cidrs("169.254.7.0/24"))
    with subscriptions(redis_url, policy) as stub:
        assert create(stub, "https://10.1.2.3/notify")
        assert create(stub, "https://169.254.7.7/notify")
        assert "loopback" in refusal(stub, "https://127.0.0.1/notify")
        assert "link-local" in refusal(stub, "https://169.254.169.254/notify")


def test_environment_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETWEAVE_CALLBACK_ALLOW_HTTP", "1")
    monkeypatch.setenv("NETWEAVE_CALLBACK_ALLOWED_CIDRS", "127.0.0.0/8, ::1/128")
    monkeypatch.setenv("NETWEAVE_CALLBACK_PROBE", "true")
    policy = CallbackPolicy.from_env()
    assert policy == CallbackPolicy(
        allow_http=True, allowed_networks=parse_cidrs("127.0.0.0/8,::1/128"), probe=True
    )
    monkeypatch.setenv("NETWEAVE_CALLBACK_ALLOWED_CIDRS", "not-a-network")
    with pytest.raises(ValueError, match="NETWEAVE_CALLBACK_ALLOWED_CIDRS"):
        CallbackPolicy.from_env()
    assert CallbackPolicy() == CallbackPolicy(allow_http=False, allow_private=False)


def test_reachability_probe(redis_url: str, receiver: Receiver) -> None:
    policy = CallbackPolicy(
        allow_http=True,
        allowed_networks=parse_cidrs("127.0.0.0/8"),
        probe=True,
        probe_timeout_s=1.0,
    )
    with subscriptions(redis_url, policy) as stub:
        assert create(stub, receiver.url + "/ok")
        assert receiver.requests[-1].method == "GET"
        receiver.answer = lambda _r: Answer(500)
        assert "answered the validation GET with 500" in refusal(stub, receiver.url + "/bad")
        receiver.answer = lambda _r: Answer(204, delay_s=1.5)
        assert "did not answer the validation GET within 1 s" in refusal(
            stub, receiver.url + "/slow"
        )
        assert "unreachable" in refusal(stub, "http://no-such-host.invalid/x")


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("(eq,nosuchattribute,1)", "applies to no inventory object of the v1 model"),
        ("(eq,name", "missing ')'"),
        ("(xx,name,a)", "unknown operator"),
        ("(eq,name,a,b)", "eq takes exactly 1 value"),
    ],
)
def test_a_bad_filter_is_refused_at_creation(
    redis_url: str, expression: str, complaint: str
) -> None:
    with subscriptions(redis_url, CallbackPolicy()) as stub:
        detail = refusal(stub, "https://smo.example.net/notify", expression)
    assert detail.startswith("filter: ") and complaint in detail


def test_filters_of_any_inventory_kind_are_accepted(redis_url: str) -> None:
    with subscriptions(redis_url, CallbackPolicy()) as stub:
        for expression in (
            "(eq,resourceTypeId,x)",
            "(cont,location,Frankfurt)",
            "(eq,extensions/site,a);(neq,name,b)",
            "(eq,capabilities/x,1)",
        ):
            assert create(stub, f"https://smo.example.net/{len(expression)}", expression)
