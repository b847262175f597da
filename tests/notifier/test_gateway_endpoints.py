"""Callbacks never reach the gateway's own listeners, whatever the allow-lists say: refused
at creation (the 400 detail the servicer returns, `callback_problem`) and at every delivery
connection (`open_connection`, the WebhookClient, a running notifier), judged on real
sockets: real listeners that must see no connection, real local interface addresses."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from devstack.processes import wait_until
from devstack.stack import (
    ALERTMANAGER_PORT_FIELDS,
    AWS_PORT_FIELDS,
    PORT_FIELDS,
    LocalStack,
    StackConfig,
)
from server.config import GatewayConfig
from server.notifier import keys
from server.notifier.__main__ import dlq
from server.notifier.config import NotifierConfig
from server.notifier.deadletters import DeadLetters
from server.notifier.http import WebhookClient
from server.store import InventoryStore, connect
from server.subscriptions.addresses import is_local_address, parse_endpoints
from server.subscriptions.callbacks import (
    CallbackPolicy,
    CallbackRefused,
    open_connection,
    parse_cidrs,
)
from server.subscriptions.validation import callback_problem
from tests.notifier.conftest import SECRET, make_config, pool, running, subscribe

OWN = "one of the gateway's own listeners"


@contextmanager
def listening(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A real listener standing in for one of the gateway's (Envoy admin, Redis ...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connections(sock: socket.socket) -> int:
    """How many connections reached the listener (a connect completes in the kernel, so
    one that happened is waiting in the accept queue)."""
    count = 0
    while True:
        try:
            accepted, _ = sock.accept()
        except BlockingIOError:
            return count
        accepted.close()
        count += 1


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def local_interface_address() -> ipaddress.IPv4Address | None:
    """An IPv4 address of one of this machine's non-loopback interfaces, if it has one."""
    candidates: list[str] = []
    for target in ("203.0.113.1", "192.0.2.1", "10.255.255.254"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))  # UDP: no packet sent, only a route chosen
                candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        candidates.extend(str(info[4][0]) for info in infos)
    except OSError:
        pass
    for candidate in candidates:
        address = ipaddress.IPv4Address(candidate)
        if not address.is_loopback and not address.is_unspecified:
            return address
    return None


def development(*endpoints: tuple[str, int], extra_cidrs: str = "") -> CallbackPolicy:
    """The `make run` posture (http, loopback admitted) guarding `endpoints`."""
    cidrs = "127.0.0.0/8,::1/128" + (f",{extra_cidrs}" if extra_cidrs else "")
    return CallbackPolicy(
        allow_http=True, allowed_networks=parse_cidrs(cidrs)
    ).with_gateway_endpoints(endpoints)


# --- at creation --------------------------------------------------------------------------


def test_loopback_allow_list_never_admits_a_gateway_port() -> None:
    with listening() as admin:
        port = port_of(admin)
        policy = development(("127.0.0.1", port))
        assert callback_problem(f"http://127.0.0.1:{port}/quitquitquit", policy) == (
            f"host '127.0.0.1' resolves to 127.0.0.1:{port}, {OWN}"
        )
        assert OWN in (callback_problem(f"http://localhost:{port}/x", policy) or "")
        # The whole loopback range, and IPv4-mapped IPv6, are this machine too.
        assert OWN in (callback_problem(f"http://127.1.2.3:{port}/x", policy) or "")
        assert OWN in (callback_problem(f"http://[::ffff:127.0.0.1]:{port}/x", policy) or "")
        # Another port on loopback is a receiver like any other.
        other = port + 1 if port < 65535 else port - 1
        assert callback_problem(f"http://127.0.0.1:{other}/notify", policy) is None


def test_ipv6_loopback_is_refused_when_local() -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    with listening("::1") as admin:
        port = port_of(admin)
        policy = development(("127.0.0.1", port))
        assert callback_problem(f"http://[::1]:{port}/x", policy) == (
            f"host '::1' resolves to [::1]:{port}, {OWN}"
        )


def test_a_local_interface_address_reaches_the_gateway_too() -> None:
    address = local_interface_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 interface")
    assert is_local_address(address)
    with listening() as admin:
        port = port_of(admin)
        # Even an allow-list naming the interface address exactly does not admit it.
        policy = development(("127.0.0.1", port), extra_cidrs=f"{address}/32")
        assert callback_problem(f"http://{address}:{port}/x", policy) == (
            f"host '{address}' resolves to {address}:{port}, {OWN}"
        )
        # (What the allow-list alone would do.)
        admitted = development(extra_cidrs=f"{address}/32")
        assert callback_problem(f"http://{address}:{port}/x", admitted) is None


def test_wildcard_endpoints_protect_every_local_address() -> None:
    with listening() as admin:
        port = port_of(admin)
        for wildcard in ("0.0.0.0", "::", ""):
            policy = development((wildcard, port))
            assert OWN in (callback_problem(f"http://127.0.0.1:{port}/", policy) or ""), wildcard
            assert OWN in (callback_problem(f"http://localhost:{port}/", policy) or ""), wildcard
        # "Unspecified" connects to this machine: never a way around it.
        everything = development(("127.0.0.1", port), extra_cidrs="0.0.0.0/0")
        assert OWN in (callback_problem(f"http://0.0.0.0:{port}/", everything) or "")


def test_a_named_endpoint_protects_what_it_resolves_to() -> None:
    with listening() as redis_like:
        port = port_of(redis_like)
        assert OWN in (
            callback_problem(f"http://127.0.0.1:{port}/", development(("localhost", port))) or ""
        )


def test_an_endpoint_on_another_host_protects_only_that_host() -> None:
    remote = ipaddress.IPv4Address("203.0.113.77")  # TEST-NET-3: nobody's interface
    assert not is_local_address(remote)
    policy = development((str(remote), 6379), extra_cidrs="203.0.113.0/24")
    assert callback_problem("http://203.0.113.77:6379/", policy) == (
        f"host '203.0.113.77' resolves to 203.0.113.77:6379, {OWN}"
    )
    assert callback_problem("http://203.0.113.78:6379/", policy) is None
    assert callback_problem("http://127.0.0.1:6379/", policy) is None


def test_the_port_of_a_callback_without_one_is_the_schemes() -> None:
    policy = development(("127.0.0.1", 80), ("127.0.0.1", 443))
    assert OWN in (callback_problem("http://127.0.0.1/x", policy) or "")
    assert OWN in (callback_problem("https://127.0.0.1/x", policy) or "")
    assert callback_problem("http://127.0.0.1:8000/x", policy) is None


def test_the_production_posture_names_the_listener_first() -> None:
    policy = CallbackPolicy().with_gateway_endpoints([("127.0.0.1", 8443)])
    assert callback_problem("https://127.0.0.1:8443/x", policy) == (
        f"host '127.0.0.1' resolves to 127.0.0.1:8443, {OWN}"
    )


# --- configuration ------------------------------------------------------------------------


def test_gateway_endpoints_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETWEAVE_GATEWAY_ENDPOINTS", "127.0.0.1:9901, [::1]:6380,:8080,redis:6379")
    assert CallbackPolicy.from_env().gateway_endpoints == (
        ("127.0.0.1", 9901),
        ("::1", 6380),
        ("", 8080),
        ("redis", 6379),
    )


@pytest.mark.parametrize(
    "value", ["9901", "127.0.0.1", "host:port", "::1:9901", "[nothost]:1", "h:0", "h:70000"]
)
def test_a_malformed_gateway_endpoint_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NETWEAVE_GATEWAY_ENDPOINTS", f"127.0.0.1:9901,{value}")
    with pytest.raises(ValueError, match="NETWEAVE_GATEWAY_ENDPOINTS"):
        CallbackPolicy.from_env()


def test_the_core_guards_its_own_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NETWEAVE_EDGE_SECRET", "NETWEAVE_EDGE_LISTEN", "NETWEAVE_GRPC_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETWEAVE_GRPC_PORT", "50111")
    monkeypatch.setenv("NETWEAVE_OPS_PORT", "8111")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis.internal:6390/0")
    monkeypatch.setenv("NETWEAVE_ADAPTERS", "127.0.0.1:50161")
    monkeypatch.setenv("NETWEAVE_GATEWAY_ENDPOINTS", "127.0.0.1:9901")
    endpoints = GatewayConfig.from_env().callback_policy.gateway_endpoints
    assert set(endpoints) == {
        ("127.0.0.1", 9901),
        ("127.0.0.1", 50111),
        ("127.0.0.1", 8111),
        ("redis.internal", 6390),
        ("127.0.0.1", 50161),
    }


def test_the_notifier_guards_its_own_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETWEAVE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NETWEAVE_NOTIFIER_OPS_PORT", "8181")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6391/0")
    monkeypatch.delenv("NETWEAVE_GATEWAY_ENDPOINTS", raising=False)
    policy = NotifierConfig.from_env().callback_policy
    assert set(policy.gateway_endpoints) == {("127.0.0.1", 8181), ("127.0.0.1", 6391)}
    # Port 0 (picked at start) is not known in advance: nothing to guard yet.
    assert policy.with_gateway_endpoints([("127.0.0.1", 0)]) == policy


@pytest.mark.parametrize("optional_adapters", [True, False])
@pytest.mark.parametrize("dev_callbacks", [True, False])
def test_the_local_stack_names_all_its_ports_in_every_posture(
    tmp_path: Path, dev_callbacks: bool, optional_adapters: bool
) -> None:
    stack = LocalStack(
        StackConfig.ephemeral(
            tmp_path,
            dev_callbacks=dev_callbacks,
            alertmanager=optional_adapters,
            aws_regions=("eu-west-1",) if optional_adapters else (),
        )
    )
    # Every listener the stack runs: the Alertmanager and AWS adapters' only when they run.
    optional = ALERTMANAGER_PORT_FIELDS + AWS_PORT_FIELDS
    ports = {
        getattr(stack.config, name)
        for name in PORT_FIELDS
        if optional_adapters or name not in optional
    }
    assert len(ports) == len(PORT_FIELDS) - (0 if optional_adapters else len(optional))
    for env in (stack.core_env(), stack.notifier_env()):
        endpoints = parse_endpoints(env["NETWEAVE_GATEWAY_ENDPOINTS"])
        assert set(endpoints) == {("127.0.0.1", port) for port in ports}
        assert ("NETWEAVE_CALLBACK_ALLOWED_CIDRS" in env) == dev_callbacks


# --- at delivery --------------------------------------------------------------------------


def test_open_connection_never_connects_to_a_gateway_listener() -> None:
    with listening() as admin:
        url = f"http://127.0.0.1:{port_of(admin)}/quitquitquit"
        # The check that follows would see a connection: this one is allowed.
        allowed = open_connection(url, development(), timeout=2.0)
        allowed.connect()
        allowed.close()
        assert connections(admin) == 1

        with pytest.raises(CallbackRefused, match=OWN):
            open_connection(url, development(("127.0.0.1", port_of(admin))), timeout=2.0)
        assert connections(admin) == 0


def test_the_webhook_client_refuses_a_gateway_listener_for_good() -> None:
    with listening() as admin:
        port = port_of(admin)
        client = WebhookClient(b"k" * 32, development(("0.0.0.0", port)), timeout_s=2.0)
        try:
            result = client.post(f"http://localhost:{port}/quitquitquit", "n-1", b"{}")
        finally:
            client.close()
        assert result.outcome == "refused" and result.permanent and not result.ok
        assert OWN in result.reason
        assert connections(admin) == 0


def test_a_running_notifier_dead_letters_it_without_credentials(
    redis_url: str,
    store: InventoryStore,
    raw: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with listening() as admin:
        port = port_of(admin)
        # Written straight to Redis, as if the creation check had been passed by.
        subscribe(redis_url, f"http://ops:hunter2@127.0.0.1:{port}/quitquitquit?token=s3cr3t")
        config = make_config(redis_url, callback_policy=development(("127.0.0.1", port)))
        with running(config) as notifier:
            store.apply("static", [pool()])
            wait_until(lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == 1, 10, "the refused notification")
            assert notifier.metrics.deliveries.labels("refused")._value.get() == 1
        assert connections(admin) == 0

    letters: Any = raw.xrange(keys.DEAD_LETTERS_KEY)
    ((letter_id, letter),) = letters
    assert letter["reason"] == (
        f"refused by the callback policy: host '127.0.0.1' resolves to 127.0.0.1:{port}, {OWN}"
    )
    assert letter["callback"] == (
        f"http://[redacted]@127.0.0.1:{port}/quitquitquit?token=[redacted]"
    )
    # Dead letters from before: `dlq show` redacts them on the way out.
    client = connect(redis_url)
    pipe = client.pipeline()
    DeadLetters(client).add(
        pipe, {"subscriptionId": str(uuid.uuid4()), "callback": "https://u:pw@smo/n?sig=x"}
    )
    old_id = pipe.execute()[0].decode()
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert dlq(["show", letter_id]) == 0
    assert dlq(["show", old_id]) == 0
    shown = capsys.readouterr().out
    assert (
        f"127.0.0.1:{port}/quitquitquit" in shown
        and "https://[redacted]@smo/n?sig=[redacted]" in shown
    )
    for secret in ("hunter2", "s3cr3t", "pw@", "sig=x"):
        assert secret not in shown
