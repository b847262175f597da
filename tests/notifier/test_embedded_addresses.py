"""IPv6 addresses that carry an IPv4 address (6to4, IPv4-mapped, IPv4-compatible, NAT64,
Teredo) are judged as the IPv4 address they carry: a relay or translator delivers there.
IP literals only, so no DNS and no network is involved."""

from __future__ import annotations

import ipaddress

import pytest

from server.subscriptions.addresses import embedded_ipv4
from server.subscriptions.callbacks import CallbackPolicy, CallbackRefused, parse_cidrs

# Every range that embeds, allowed as an IPv6 range: what is left to refuse is the IPv4.
EMBEDDING_RANGES = parse_cidrs("2002::/16,::/96,64:ff9b::/96,2001::/32")


def refusal(policy: CallbackPolicy, url: str) -> str:
    with pytest.raises(CallbackRefused) as raised:
        policy.check_url(url)
    return str(raised.value)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        # 6to4: the IPv4 address in bits 16-48.
        ("2002:7f00:1::", "a 6to4 address embedding 127.0.0.1, a loopback address"),
        ("2002:a9fe:a9fe::1", "a 6to4 address embedding 169.254.169.254, a link-local address"),
        ("2002:c0a8:101:1::1", "a 6to4 address embedding 192.168.1.1, a private address"),
        # IPv4-compatible (deprecated): ::a.b.c.d.
        ("::7f00:1", "an IPv4-compatible address embedding 127.0.0.1, a loopback address"),
        ("::a00:1", "an IPv4-compatible address embedding 10.0.0.1, a private address"),
        # NAT64 well-known prefix (RFC 6052).
        ("64:ff9b::7f00:1", "a NAT64 address embedding 127.0.0.1, a loopback address"),
        (
            "64:ff9b::a9fe:a9fe",
            "a NAT64 address embedding 169.254.169.254, a link-local address",
        ),
        ("64:ff9b::6440:1", "a NAT64 address embedding 100.64.0.1, a private address"),
        # Teredo: server in bits 32-64, client (obfuscated: inverted) in the last 32.
        ("2001:0:a00:1::f7f7:f7f7", "a Teredo address whose server is 10.0.0.1, a private"),
        (
            "2001:0:808:808::80ff:fffe",
            "a Teredo address whose client is 127.0.0.1, a loopback address",
        ),
        (
            "2001:0:808:808::5601:5601",
            "a Teredo address whose client is 169.254.169.254, a link-local address",
        ),
    ],
)
def test_an_embedded_non_public_ipv4_is_refused_even_with_the_ipv6_range_allowed(
    address: str, reason: str
) -> None:
    policy = CallbackPolicy(allowed_networks=EMBEDDING_RANGES)
    assert f"resolves to {address}, {reason}" in refusal(policy, f"https://[{address}]/notify")


def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address() -> None:
    policy = CallbackPolicy(allowed_networks=parse_cidrs("::ffff:0:0/96"))
    assert "resolves to 127.0.0.1, a loopback address" in refusal(
        policy, "https://[::ffff:7f00:1]/notify"
    )


@pytest.mark.parametrize(
    "address",
    ["2002:808:808::1", "::808:808", "64:ff9b::808:808", "2001:0:808:808::f7f7:f7f7"],
)
def test_an_embedded_public_ipv4_leaves_the_ipv6_address_to_its_own_category(
    address: str,
) -> None:
    # 8.8.8.8 inside: nothing against it, so the allowed IPv6 range decides.
    _host, _port, addresses = CallbackPolicy(allowed_networks=EMBEDDING_RANGES).check_url(
        f"https://[{address}]/notify"
    )
    assert addresses == [ipaddress.ip_address(address)]
    assert "embedding" not in (CallbackPolicy().address_problem(addresses[0]) or "")


def test_allowing_private_addresses_admits_a_private_embedded_ipv4_but_never_loopback() -> None:
    policy = CallbackPolicy(allow_private=True, allowed_networks=parse_cidrs("64:ff9b::/96"))
    # Teredo (2001::/23) is private in Python's sense: the outer address alone would pass.
    assert policy.address_problem(ipaddress.ip_address("2001:0:808:808::f7f7:f7f7")) is None
    assert "whose client is 127.0.0.1, a loopback" in refusal(
        policy, "https://[2001:0:808:808::80ff:fffe]/notify"
    )
    # A translator to an SMO in the same data centre (10.0.0.1): private, so admitted.
    assert policy.check_url("https://[64:ff9b::a00:1]/notify")[2]
    assert "embedding 10.0.0.1, a private address" in refusal(
        CallbackPolicy(allowed_networks=parse_cidrs("64:ff9b::/96")),
        "https://[64:ff9b::a00:1]/notify",
    )


def test_an_embedded_gateway_listener_is_refused_whatever_the_allow_lists_say() -> None:
    policy = CallbackPolicy(
        allow_http=True,
        allowed_networks=parse_cidrs("127.0.0.0/8,2002::/16,64:ff9b::/96"),
        gateway_endpoints=(("127.0.0.1", 9901),),
    )
    assert (
        "host '2002:7f00:1::' resolves to 2002:7f00:1::, a 6to4 address embedding "
        "127.0.0.1:9901, one of the gateway's own listeners"
    ) in refusal(policy, "http://[2002:7f00:1::]:9901/quitquitquit")
    assert "a NAT64 address embedding 127.0.0.1:9901, one of the gateway's own" in refusal(
        policy, "http://[64:ff9b::7f00:1]:9901/quitquitquit"
    )
    # Another port of the same embedded address: allowed (127.0.0.0/8 is).
    assert policy.check_url("http://[2002:7f00:1::]:9902/notify")[2]


def test_embedded_ipv4_reads_each_format() -> None:
    def found(text: str) -> list[str]:
        return [str(v4) for _how, v4 in embedded_ipv4(ipaddress.ip_address(text))]

    assert found("2002:c000:204::1") == ["192.0.2.4"]
    assert found("::c000:204") == ["192.0.2.4"]
    assert found("64:ff9b::c000:204") == ["192.0.2.4"]
    assert found("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ["65.54.227.120", "192.0.2.45"]
    # Not embeddings: :: and ::1 are themselves, and an ordinary or IPv4 address.
    assert found("::") == found("::1") == found("2606:4700::1") == found("192.0.2.4") == []
    # NAT64's local-use prefix (RFC 8215) has no fixed layout: not read, refused as
    # non-public by its own category.
    assert found("64:ff9b:1::c000:204") == []
