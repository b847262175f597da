"""A resource's wire message parsed straight from its stored bytes (issue 18): the same
message, byte for byte, as the builder makes from the parsed domain object, in every served
major; anything else takes the builder."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError, Message
from hypothesis import given, settings
from hypothesis import strategies as st
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import KINDS, serialize
from server.cache import InventoryCache, _resource_bytes, _ResourceMemo
from server.store import Snapshot
from server.wire import WireModel, common, same_shape
from server.wire import v1 as wire_v1
from server.wire import v2 as wire_v2

MODELS = (wire_v1.MODEL, wire_v2.MODEL)
POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"

texts = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def resources(draw: st.DrawFn, depth: int = 0) -> domain_pb2.Resource:
    resource = domain_pb2.Resource(
        resource_id=draw(texts),
        resource_pool_id=POOL_ID if depth == 0 else draw(texts),
        resource_type_id=draw(texts),
        name=draw(texts),
        description=draw(texts),
        global_asset_id=draw(texts),
        parent_id=draw(texts),
        tags=draw(st.lists(texts, max_size=3)),
        groups=draw(st.lists(texts, max_size=3)),
    )
    # Extensions unset, set but empty, or holding values.
    extensions = draw(st.none() | st.dictionaries(texts, json_values, max_size=4))
    if extensions is not None:
        resource.extensions.SetInParent()
        resource.extensions.update(extensions)
    if depth < 2:
        resource.elements.extend(draw(st.lists(resources(depth + 1), max_size=2)))
    return resource


def stored(resource: domain_pb2.Resource) -> bytes:
    return serialize(domain_pb2.InventoryObject(resource=resource))


def loaded(*resources: domain_pb2.Resource) -> InventoryCache:
    objects: dict[str, dict[str, bytes]] = {kind: {} for kind in KINDS}
    pool = domain_pb2.InventoryObject(
        resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID, name="pool")
    )
    objects["resource_pool"][POOL_ID] = serialize(pool)
    for resource in resources:
        objects["resource"][resource.resource_id] = stored(resource)
    cache = InventoryCache("https://o2ims.example")
    cache.load(Snapshot(version=1, last_event_id="1-0", objects=objects))
    return cache


def built(model: WireModel, resource: domain_pb2.Resource) -> Message:
    message: Message = common.resource_info(model.pb, resource)
    return message


def assert_same(wire: Any, expected: Message) -> None:
    assert wire == expected
    assert wire.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )


def test_every_served_major_parses_resources_from_their_bytes() -> None:
    for model in MODELS:
        assert model.resource_parses_from_domain, model.major


@settings(max_examples=150, deadline=None)
@given(resource=resources())
def test_a_resource_from_its_bytes_is_what_the_builder_makes(
    resource: domain_pb2.Resource,
) -> None:
    cache = loaded(resource)
    for model in MODELS:
        wire = cache.get(model, "resource", resource.resource_id)
        assert wire is not None
        assert_same(wire, built(model, resource))
        # Extensions are there ({} when empty) on the resource and every element, as the
        # builder sends them.
        assert wire.HasField("extensions")
        assert all(element.HasField("extensions") for element in wire.elements)


def test_a_field_a_newer_domain_schema_adds_is_dropped() -> None:
    resource = domain_pb2.Resource(resource_id="r1", resource_pool_id=POOL_ID, name="n")
    # Field 99, a string: unknown to this schema, as a newer adapter might write it.
    newer = resource.SerializeToString() + b"\x9a\x06\x03new"
    payload = serialize(domain_pb2.InventoryObject(resource=domain_pb2.Resource()))
    payload = bytes([payload[0], len(newer)]) + newer
    memo = _ResourceMemo(wire_v1.MODEL)
    assert _resource_bytes(payload) == newer
    wire = memo.put_bytes("r1", newer)
    assert_same(wire, built(wire_v1.MODEL, resource))


def test_bytes_that_do_not_parse_leave_no_memo_behind() -> None:
    memo = _ResourceMemo(wire_v1.MODEL)
    with pytest.raises(DecodeError):
        memo.put_bytes("broken", b"\x0a\xff")
    assert "broken" not in memo.messages
    assert "broken" not in memo.chunk_of


@pytest.mark.parametrize(
    ("payload", "inner"),
    [
        (b"\x3a\x00", b""),
        (b"\x3a\x02\x0a\x00", b"\x0a\x00"),
        (b"\x3a\x80\x01" + b"x" * 128, b"x" * 128),  # a two-byte length
        (b"\x32\x02\x0a\x00", None),  # another kind (resource_pool)
        (b"\x3a\x02\x0a\x00\x3a\x00", None),  # something after the resource
        (b"\x3a\x05\x0a\x00", None),  # shorter than its length says
        (b"\x3a\x80", None),  # the length cut off
        (b"", None),
    ],
)
def test_only_a_lone_resource_field_is_taken_as_the_resource(
    payload: bytes, inner: bytes | None
) -> None:
    assert _resource_bytes(payload) == inner


def test_a_payload_of_another_shape_takes_the_builder() -> None:
    resource = domain_pb2.Resource(resource_id="r1", resource_pool_id=POOL_ID, description="d")
    cache = loaded(resource)
    # The same resource with a trailing empty field 7 merged in: still one resource to a
    # parser, but not the lone field the bytes path takes.
    with cache._lock:
        cache._objects["resource"]["r1"] = stored(resource) + b"\x3a\x00"
    assert _resource_bytes(cache._objects["resource"]["r1"]) is None
    assert_same(cache.get(wire_v1.MODEL, "resource", "r1"), built(wire_v1.MODEL, resource))


def test_the_shape_check_refuses_what_differs() -> None:
    pb = wire_v1.MODEL.pb
    assert same_shape(domain_pb2.Resource.DESCRIPTOR, pb.ResourceInfo.DESCRIPTOR)
    # Other numbers for the same names, another message, a well-known type for a message.
    assert not same_shape(
        domain_pb2.DeploymentManager.DESCRIPTOR, pb.DeploymentManagerInfo.DESCRIPTOR
    )
    assert not same_shape(domain_pb2.Resource.DESCRIPTOR, pb.ResourcePoolInfo.DESCRIPTOR)
    assert not same_shape(domain_pb2.Resource.DESCRIPTOR, struct_pb2.Struct.DESCRIPTOR)
    # Enums are the builders' to map; oneofs are refused.
    assert not same_shape(domain_pb2.ResourceType.DESCRIPTOR, pb.ResourceTypeInfo.DESCRIPTOR)
    assert not same_shape(
        domain_pb2.InventoryObject.DESCRIPTOR, domain_pb2.InventoryObject.DESCRIPTOR
    )
