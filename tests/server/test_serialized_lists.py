"""List responses written as bytes from the page's messages (server.listing.SerializedList)
are what protobuf writes for the response message (byte for byte but for the order of map
entries, which protobuf leaves open), and the core's servicers,
registered with netweave.grpc_server.add_servicer, send them over a real channel."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from o2ims.inventory.v1 import inventory_pb2 as inv
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc
from o2ims.inventory.v2 import inventory_pb2 as inv2
from o2ims.subscriptions.v1 import subscriptions_pb2 as subs

from netweave.grpc_server import add_servicer, new_server, serialize_response
from server.listing import Lister, ListingSettings, SerializedList
from server.query import Page

POOL = "0b4a1f3e-5c2d-4e6f-8a9b-0c1d2e3f4a5b"


class RecordingContext:
    """The part of grpc.ServicerContext a successful list uses."""

    def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.initial_metadata = metadata


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choices(string.ascii_letters + "é✓ \n", k=rng.randrange(longest)))


def _resources(count: int, rng: random.Random) -> dict[str, inv.ResourceInfo]:
    """Resources with fields set and unset, long and short (one- and two-byte lengths)."""
    objects = {}
    for number in range(count):
        resource = inv.ResourceInfo(
            resource_id=f"r{number:04d}",
            resource_pool_id=POOL,
            description=_text(rng, 300),
            tags=[_text(rng, 5) for _ in range(rng.randrange(3))],
        )
        if rng.random() < 0.5:
            resource.name = _text(rng, 20)
        resource.extensions.update({"rack": f"R{number % 7}", "cores": number})
        resource.elements.add(resource_id=f"r{number:04d}-e", extensions=struct_pb2.Struct())
        objects[resource.resource_id] = resource
    return objects


def _pages(serialized: bool, objects: dict[str, Any], **query: Any) -> Iterator[Any]:
    """Every page of a walk (the same secret both ways: the same markers)."""
    lister = Lister(ListingSettings(secret=b"s" * 32, page_size=7, serialized_lists=serialized))
    marker = ""
    while True:
        request = inv.ListResourcesRequest(
            resource_pool_id=POOL, nextpage_opaque_marker=marker, **query
        )
        response = lister.respond_in_memory(
            RecordingContext(),
            request,
            inv.ListResourcesResponse,
            "resources",
            scope="test/resources",
            objects=objects,
        )
        yield response
        parsed = inv.ListResourcesResponse.FromString(response.SerializeToString())
        if not parsed.next_page_token:
            return
        marker = parsed.next_page_token


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"fields": "name,extensions"},
        {"filter": ["(eq,extensions/rack,R3)"]},
        {"exclude_default": True},
    ],
)
def test_a_written_list_holds_the_response_message(query: dict[str, Any]) -> None:
    objects = _resources(40, random.Random(3))
    written = list(_pages(True, objects, **query))
    messages = list(_pages(False, objects, **query))
    if not query.get("filter"):
        assert len(messages) > 1  # page tokens written too
    for page, message in zip(written, messages, strict=True):
        assert isinstance(page, SerializedList)
        assert isinstance(message, inv.ListResourcesResponse)
        # Protobuf writes fields in number order (the page token (1), then the items (2)),
        # but a map's entries (extensions) in no fixed order, the same message's from one
        # process to the next: the same content, the same length, the same deterministic
        # bytes.
        parsed = inv.ListResourcesResponse.FromString(page.SerializeToString())
        assert parsed == message
        assert len(page.SerializeToString()) == len(message.SerializeToString())
        assert parsed.SerializeToString(deterministic=True) == message.SerializeToString(
            deterministic=True
        )


@pytest.mark.parametrize(
    ("response_type", "field", "item"),
    [
        (inv.ListResourcesResponse, "resources", inv.ResourceInfo(resource_id="x" * 200)),
        (inv2.ListResourcePoolsResponse, "resource_pools", inv2.ResourcePoolInfo(name="p")),
        (
            subs.ListSubscriptionsResponse,
            "subscriptions",
            subs.InventorySubscriptionInfo(callback="https://smo.example/cb"),
        ),
    ],
)
@pytest.mark.parametrize("token", ["", "t", "m" * 300])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_any_list_response_is_written_as_protobuf_writes_it(
    response_type: Any, field: str, item: Any, token: str, count: int
) -> None:
    """Every list response type, with or without a token (of one- and two-byte lengths),
    empty or not: the same bytes as the message."""
    items = [item] * count
    page = Page(items=items, next_page_token=token)
    collection = response_type.DESCRIPTOR.fields_by_name[field]
    written = SerializedList.of(response_type, collection, page)
    message = response_type(next_page_token=token, **{field: items})
    assert written.SerializeToString() == message.SerializeToString()
    assert serialize_response(written) == serialize_response(message)


class ListingInventory(inv_grpc.InventoryServiceServicer):
    """ListResources from a Lister that writes its lists; GetResource a message."""

    def __init__(self, lister: Lister, objects: dict[str, inv.ResourceInfo]) -> None:
        self._lister = lister
        self._objects = objects

    def ListResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._lister.respond_in_memory(
            context,
            request,
            inv.ListResourcesResponse,
            "resources",
            scope="test/resources",
            objects=self._objects,
        )

    def GetResource(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._objects[request.resource_id]


def test_servicers_registered_with_add_servicer_send_written_lists() -> None:
    objects = _resources(25, random.Random(5))
    lister = Lister(ListingSettings(secret=b"s" * 32, page_size=10, serialized_lists=True))
    server = new_server(2)
    servicer = ListingInventory(lister, objects)  # type: ignore[abstract]
    add_servicer(inv_grpc.add_InventoryServiceServicer_to_server, servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inv_grpc.InventoryServiceStub(channel)
            page = stub.ListResources(inv.ListResourcesRequest(resource_pool_id=POOL), timeout=10)
            assert [r.resource_id for r in page.resources] == sorted(objects)[:10]
            assert page.resources[3] == objects[sorted(objects)[3]]
            assert page.next_page_token
            # A method answering with its message is served as before.
            got = stub.GetResource(
                inv.GetResourceRequest(resource_pool_id=POOL, resource_id="r0004"), timeout=10
            )
            assert got == objects["r0004"]
            # The generic path (a call by name, not the generated stub's registered method)
            # serializes the same way.
            by_name = channel.unary_unary(
                "/o2ims.inventory.v1.InventoryService/ListResources",
                request_serializer=inv.ListResourcesRequest.SerializeToString,
                response_deserializer=inv.ListResourcesResponse.FromString,
            )
            assert by_name(inv.ListResourcesRequest(resource_pool_id=POOL), timeout=10) == page
    finally:
        server.stop(None)


def test_a_written_list_needs_add_servicer() -> None:
    """Registered with the generated function alone, a written list cannot be sent (the
    response message's own serializer refuses it): the call fails, loudly."""
    objects = _resources(3, random.Random(6))
    lister = Lister(ListingSettings(secret=b"s" * 32, serialized_lists=True))
    server = new_server(2)
    servicer = ListingInventory(lister, objects)  # type: ignore[abstract]
    inv_grpc.add_InventoryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inv_grpc.InventoryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListResources(inv.ListResourcesRequest(resource_pool_id=POOL), timeout=10)
            assert raised.value.code() is grpc.StatusCode.INTERNAL
    finally:
        server.stop(None)


class RecordingServer:
    """What a generated add_*Servicer_to_server calls on a server, recorded."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered.update(handlers)


def test_add_servicer_replaces_the_serializer_on_both_paths() -> None:
    """The registered methods and the generic handler (the lookup by name) both answer
    with serialize_response, and keep the request's deserializer and the behaviour."""
    server = RecordingServer()
    servicer = ListingInventory(Lister(ListingSettings(secret=b"s" * 32)), {})  # type: ignore[abstract]
    add_servicer(inv_grpc.add_InventoryServiceServicer_to_server, servicer, server)
    assert "ListResources" in server.registered and len(server.generic) == 1
    [generic] = server.generic

    class Details:
        method = "/o2ims.inventory.v1.InventoryService/ListResources"

    for handler in (server.registered["ListResources"], generic.service(Details())):
        assert handler.response_serializer is serialize_response
        assert handler.request_deserializer == inv.ListResourcesRequest.FromString
        assert handler.unary_unary == servicer.ListResources

    class Unknown:
        method = "/o2ims.inventory.v1.InventoryService/NoSuchMethod"

    assert generic.service(Unknown()) is None
